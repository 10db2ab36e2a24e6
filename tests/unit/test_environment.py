"""Binder's environment.yml mirrors the pinned lock the Makefile installs."""
import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_environment_yml_mirrors_lock():
    sync = runpy.run_path(str(ROOT / "scripts" / "sync_environment.py"))
    assert (ROOT / "environment.yml").read_text() == sync["render"](ROOT / "requirements.lock")


def test_lock_pins_every_declared_dependency():
    import tomllib

    lock = {ln.split("==")[0].lower().replace("_", "-") for ln in (ROOT / "requirements.lock").read_text().splitlines()
            if "==" in ln}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = project["dependencies"] + [d for deps in project["optional-dependencies"].values() for d in deps]
    for dep in names:
        if "platform_machine != 'x86_64'" in dep:
            continue
        name = dep.split(";")[0].split(">")[0].split("<")[0].split("=")[0].strip().lower()
        assert name in lock, f"{name} is declared in pyproject.toml but not pinned in requirements.lock"


def test_notebooks_stored_without_outputs():
    import json

    for nb in ROOT.glob("book/*.ipynb"):
        cells = json.loads(nb.read_text())["cells"]
        assert not any(c.get("outputs") for c in cells), nb
