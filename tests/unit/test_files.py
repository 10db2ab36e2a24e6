"""`files`: a file of the wrong kind is named, with what it is, in one line."""
import gzip

import numpy as np
import pandas as pd
import pytest

from carmenes_dtl import files


def test_binary_kinds_and_text(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros(3))
    (tmp_path / "a.gz").write_bytes(gzip.compress(b"x"))
    (tmp_path / "a.fits").write_bytes(b"SIMPLE  =                    T" + b" " * 50)
    (tmp_path / "a.bin").write_bytes(bytes(range(256)))
    (tmp_path / "a.csv").write_text("karmn,Teff\nJ1,3000\n")
    (tmp_path / "utf8.csv").write_text("name\n" + "Å" * 300 + "\n")  # a character cut at 512 bytes is text
    kinds = {p.name: files.binary_kind(p) for p in sorted(tmp_path.iterdir())}
    assert kinds == {"a.bin": "a binary file", "a.csv": None, "a.fits": "a FITS file", "a.gz": "a gzip file",
                     "a.npy": "a NumPy .npy array", "utf8.csv": None}


def test_read_csv_names_the_file(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "ragged.csv").write_text("a,b\n1,2\n1,2,3,4\n")
    (tmp_path / "ok.csv").write_text("a,b\n1,2\n")
    for name, message in (("empty.csv", r"empty\.csv: not a grid CSV \(EmptyDataError: "),
                          ("ragged.csv", r"ragged\.csv: not a grid CSV \(ParserError: "),
                          ("gone.csv", r"gone\.csv: not found \(expected a grid CSV\)"), (".", r": a folder, not a grid CSV")):
        with pytest.raises((ValueError, OSError), match=message):
            files.read_csv(tmp_path / name, "a grid CSV")
    pd.testing.assert_frame_equal(files.read_csv(tmp_path / "ok.csv", "a grid CSV"), pd.DataFrame({"a": [1], "b": [2]}))
