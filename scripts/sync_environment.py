"""Write environment.yml from requirements.lock so Binder/conda get the same pins."""
from pathlib import Path

HEADER = """# Mirrors requirements.lock (checked by tests/unit/test_environment.py).
# Regenerate with `make lock`.
name: carmenes-dtl
channels:
  - conda-forge
dependencies:
  - python=3.11
  - pip
  - pip:
"""


def pinned(lock: Path) -> list[str]:
    """The `name==version` lines of a pip lock file."""
    return [ln.strip() for ln in lock.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def render(lock: Path) -> str:
    return HEADER + "".join(f"      - {p}\n" for p in pinned(lock)) + "      - -e .\n"


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[1]
    (root / "environment.yml").write_text(render(root / "requirements.lock"))
