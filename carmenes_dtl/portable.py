"""Open `.keras` files written by a newer Keras.

Keras writes every constructor argument into a model's config, including ones that later
versions added and that are off (``quantization_config: None`` on Dense, ``input_axes: None``
on initialisers in Keras 3.15), and older versions refuse the unknown names. An argument this
Keras does not know and whose value is None asks for nothing, so `without_unknown_nones` drops
it; an unknown argument with a value is kept, and loading fails as it should.
"""
from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import keras



def _known_arguments(entry: dict) -> set[str] | None:
    """Keyword arguments of the class `entry` names (its ``module``/``class_name``, or its
    registered name) in this Keras, over its bases' constructors; None when it cannot be found."""
    cls = keras.saving.get_registered_object(entry["registered_name"]) if entry.get("registered_name") else None
    if cls is None:
        try:
            cls = getattr(importlib.import_module(entry["module"]), entry["class_name"])
        except (ImportError, AttributeError, KeyError, TypeError):
            return None
    if not inspect.isclass(cls):
        return None
    return {name for klass in cls.__mro__ if "__init__" in vars(klass)
            for name in inspect.signature(klass.__init__).parameters}


def without_unknown_nones(config):
    """`config` (a saved model's ``config.json``) without the None-valued arguments that the
    classes of this Keras do not accept; the names dropped (``Class.argument``, sorted, once each)."""
    dropped = set()

    def clean(node):
        if isinstance(node, list):
            return [clean(v) for v in node]
        if not isinstance(node, dict):
            return node
        node = {k: clean(v) for k, v in node.items()}
        known = _known_arguments(node) if isinstance(node.get("config"), dict) and "class_name" in node else None
        if known is not None:
            unknown = [k for k, v in node["config"].items() if v is None and k not in known]
            dropped.update(f"{node['class_name']}.{k}" for k in unknown)
            node["config"] = {k: v for k, v in node["config"].items() if k not in unknown}
        return node

    return clean(config), sorted(dropped)


@contextlib.contextmanager
def newer_copy(path: Path) -> Iterator[Path | None]:
    """While the context lasts, a copy of the `.keras` file at `path` without the None-valued
    arguments this Keras does not know (named in one line on stderr); None when there were none
    (the file's failure is then something else). `autoencoder.load` opens it."""
    with zipfile.ZipFile(path) as archive:
        config, dropped = without_unknown_nones(json.loads(archive.read("config.json")))
        if not dropped:
            yield None
            return
        print(f"[carmenes-dtl] {path}: written by a newer Keras; Keras {keras.__version__} ignores its "
              f"arguments left unset: {', '.join(dropped)}", file=sys.stderr)
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / Path(path).name
            with zipfile.ZipFile(copy, "w") as out:
                for name in archive.namelist():
                    out.writestr(name, json.dumps(config) if name == "config.json" else archive.read(name))
            yield copy
