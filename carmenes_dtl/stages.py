"""The resume engine: stages that run once, are skipped while their outputs stand, and write atomically.

A stage is skipped only when ``stages.json`` records, from the run that finished it, both
its key and the identity of each output, and both still match: the key hashes the stage's
settings, the seed, the package version and the identity of its inputs; an identity is a
file's content hash or, for a folder, its listing with sizes and modification times. So
outputs replaced since (another set linked in, a file edited by hand) make the stage run
again. A stage writes its outputs under temporary names (the `Staging` it is given) that are
renamed when it completes, so a stage killed midway leaves nothing that looks finished.
"""
from __future__ import annotations

import ctypes
import gc
import glob
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from . import __version__
from .store import partial

#: What a stage function is given: final output path -> the temporary path to write it under.
Staging = Callable[[Path], Path]


def sha256(path: Path) -> str:
    """SHA-256 of a file's content, hex."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_text(path: Path, text: str) -> None:
    """Write `text` to a temporary name, then rename: readers never see half a file."""
    tmp = partial(path)
    tmp.write_text(text)
    os.replace(tmp, path)


def remove(path: Path) -> None:
    """Delete a file, link or folder."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _partials(final: Path) -> dict[Path, Path]:
    """Temporary files of `final` and of its sidecars (``x.partial.json`` -> ``x.json``)."""
    prefix = f"{final.stem}.partial"
    return {f: f.with_name(final.stem + f.name[len(prefix):])
            for f in final.parent.glob(f"{glob.escape(prefix)}*")} if final.parent.is_dir() else {}


def release_memory() -> None:
    """Collect garbage and give the freed heap back to the OS (glibc's ``malloc_trim``; nothing
    elsewhere), so that a stage does not start on an earlier stage's leftovers."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_rss_gib() -> float | None:
    """Peak resident memory so far of this process or of any child process it waited for
    (Dask's process workers), GiB; None where the platform does not say (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return round(peak * unit / 2**30, 2)


class Stages:
    """The finished stages of a run, recorded in `file` (``RUN/stages.json``), and the means to run more."""

    def __init__(self, file: Path, seed: int):
        self.file, self.seed = Path(file), seed
        self.out = self.file.parent
        self.done = json.loads(self.file.read_text()) if self.file.exists() else {}
        self.called: list[str] = []  # the stages asked for by this process, in order
        self._digests: dict = {}

    def identity(self, path: Path) -> str:
        """Content hash of a file; for a folder, a hash of its listing (names, sizes, mtimes)."""
        path = Path(path)
        if path.is_dir():
            files = sorted(f for f in path.rglob("*") if f.is_file())
            listing = [(str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
            return hashlib.sha256(json.dumps(listing).encode()).hexdigest()
        if not path.is_file():
            return "missing"
        st = path.stat()
        memo = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if memo not in self._digests:
            self._digests[memo] = sha256(path)
        return self._digests[memo]

    def key(self, name: str, inputs=(), extra=None) -> str:
        """A stage's key: its name, settings (`extra`), seed, package version and inputs' identities."""
        parts = [name, __version__, self.seed, extra, [self.identity(p) for p in inputs]]
        return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()

    def record(self, key: str, outputs: list[Path]) -> dict:
        """What identifies a finished stage in ``stages.json``: its key and its outputs' identities."""
        return {"key": key, "outputs": {os.path.relpath(p, self.out): self.identity(p) for p in outputs}}

    def _recorded(self, name: str, done: dict | None = None) -> dict | None:
        """The identifying part (`record`) of stage `name`'s entry in `done` (default: this run's)."""
        rec = (self.done if done is None else done).get(name)
        if not isinstance(rec, dict) or not {"key", "outputs"} <= rec.keys():  # none, or 0.1.0's bare key
            return None
        return {"key": rec["key"], "outputs": rec["outputs"]}

    def _save(self) -> None:
        write_text(self.file, json.dumps(self.done, indent=1))

    def measurements(self, previous: dict) -> dict:
        """run.json's ``timings_s`` (wall seconds per stage) and ``peak_rss_gib`` (the peak resident
        memory of the process that ran the stage, GiB, at its end: the stage where it grows is the one
        that needs it), of the stages this process asked for that ran in this folder, in an interrupted
        earlier call too (``stages.json``), over those of `previous` (the run.json before)."""
        ran = {name: self.done[name] for name in self.called if "seconds" in self.done.get(name, {})}
        return {"timings_s": {**previous.get("timings_s", {}), **{n: r["seconds"] for n, r in ran.items()}},
                "peak_rss_gib": {**previous.get("peak_rss_gib", {}), **{n: r["peak_rss_gib"] for n, r in ran.items()}}}

    def run(self, name: str, outputs: list[Path], func: Callable[[Staging], None], extra=None, inputs=()) -> bool:
        """Run `func` unless `outputs` are, unchanged, those of a run with this key; returns True when it ran.

        `inputs`: every file or folder `func` reads (their identities enter the key);
        `extra`: the settings that matter. `func(staged)` writes each output `path` at
        ``staged(path)``, renamed to `path` once it has returned.
        """
        key = self.key(name, inputs, extra)
        self.called.append(name)
        if self._recorded(name) == self.record(key, outputs):
            print(f"[carmenes-dtl] {name}: up to date")
            return False
        self.done.pop(name, None)
        self._save()
        t = time.perf_counter()
        print(f"[carmenes-dtl] {name} ...", flush=True)
        staged = {Path(p): partial(Path(p)) for p in outputs}
        for final in staged:
            for tmp in _partials(final):
                remove(tmp)
        func(lambda path: staged[Path(path)])
        release_memory()
        missing = [str(final) for final, tmp in staged.items() if not tmp.exists()]
        if missing:
            raise RuntimeError(f"stage {name} did not write {', '.join(missing)}")
        for final in staged:
            for tmp, done in _partials(final).items():
                remove(done)
                os.replace(tmp, done)
        seconds = round(time.perf_counter() - t, 2)
        print(f"[carmenes-dtl] {name} done in {seconds:.1f} s", flush=True)
        self.done[name] = {**self.record(key, outputs), "seconds": seconds, "peak_rss_gib": peak_rss_gib()}
        self._save()
        return True

    def adopt(self, base: Path, names: list[str]) -> list[str]:
        """Take over the finished stages `names` of the run in `base`: hard-link their outputs into
        this run and copy their records (key and output identities; their time and memory were the
        lender's); returns the names adopted.

        This proves nothing by itself: a stage still runs when called unless the key it computes
        here, from this run's seed, settings and inputs, equals the adopted record's, so
        adopting saves work exactly where `base` did what this run would do. A stage whose
        outputs in `base` no longer match its record is not adopted.
        """
        base = Path(base)
        done = json.loads((base / self.file.name).read_text()) if (base / self.file.name).exists() else {}
        adopted = []
        for name in names:
            rec = self._recorded(name, done)  # its time and memory were the lender's
            if rec is None or self._recorded(name) == rec or any(
                    self.identity(base / rel) != ident for rel, ident in rec["outputs"].items()):
                continue
            for rel in rec["outputs"]:
                dst = self.out / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                if dst.exists() or dst.is_symlink():
                    remove(dst)
                if (base / rel).is_dir():
                    shutil.copytree(base / rel, dst, copy_function=os.link)
                else:
                    os.link(base / rel, dst)
            self.done[name] = rec
            adopted.append(name)
        self._save()
        return adopted
