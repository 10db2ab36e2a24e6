"""What a file given on the command line is, so that a reader refusing it can say so in one line
naming it: a CSV where a spectrum set was expected, a model where a CSV was, a folder, nothing."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

#: Leading bytes of the binary files a user may give by mistake, and what each is.
SIGNATURES = {
    b"\x89HDF\r\n\x1a\n": "an HDF5 file (a spectrum set?)",
    b"PK\x03\x04": "a zip archive (a .keras model?)",
    b"\x93NUMPY": "a NumPy .npy array",
    b"SIMPLE  =": "a FITS file",
    b"\x89PNG": "a PNG image",
    b"\x1f\x8b": "a gzip file",
}


def binary_kind(path: Path) -> str | None:
    """What the binary file `path` is (`SIGNATURES`, or "a binary file" when its first bytes are
    not text); None for a text file."""
    with open(path, "rb") as f:
        head = f.read(512)
    for signature, kind in SIGNATURES.items():
        if head.startswith(signature):
            return kind
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 4:  # not a character cut at the end of the sample
            return "a binary file"
    return "a binary file" if b"\0" in head else None


def require_file(path: Path, what: str) -> Path:
    """`path` as a Path; a one-line FileNotFoundError/IsADirectoryError naming it unless it is a file."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: a folder, not {what}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (expected {what})")
    return path


def read_csv(path: Path, what: str, **kwargs) -> pd.DataFrame:
    """`pandas.read_csv(path, **kwargs)`, or a one-line error naming `path` when it is missing, a
    folder, a binary file or not a CSV; `what` says what was expected ("an estimates CSV")."""
    path = require_file(path, what)
    kind = binary_kind(path)
    if kind is not None:
        raise ValueError(f"{path}: not {what} but {kind}")
    try:
        return pd.read_csv(path, **kwargs)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        first = (str(err).strip().splitlines() or [""])[0]
        raise ValueError(f"{path}: not {what} ({type(err).__name__}: {first})") from None
