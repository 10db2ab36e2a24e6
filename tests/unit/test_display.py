"""Tables as the chapters show them: each column at its own scale, no "nan", at most 15 rows shown."""
import re

import numpy as np
import pandas as pd

from carmenes_dtl import display


def _cells(html: str) -> list[str]:
    return [c.strip() for c in re.findall(r"<td[^>]*>([^<]*)</td>", html)]


def test_columns_rounded_to_their_scale_and_missing_values_blank():
    df = pd.DataFrame({"Teff [K]": [3512.46, np.nan], "MAE [dex]": [0.12345, 0.05], "l1": [8e-8, 1.2e-7],
                       "n": [16, 1200], "note": ["fine", None]})
    cells = _cells(display.table(df).data)
    # row by row: 3 significant digits at the column's largest value (3512 -> 0 decimals, 0.12 -> 3)
    assert cells == ["3,512", "0.123", "8e-08", "16", "fine", "–", "0.050", "1.2e-07", "1,200", "–"]
    assert not [c for c in cells if "nan" in c.lower()]


def test_long_tables_show_fifteen_rows_and_fold_the_rest():
    html = display.table(pd.DataFrame({"x": np.arange(40) * 1.5})).data
    shown, folded = html.split("<details>")
    assert len(_cells(shown)) == 15 and _cells(shown)[-1] == "21.0"  # 14 * 1.5
    assert len(_cells(folded)) == 40 and "All 40 rows" in folded
    assert "<details>" not in display.table(pd.DataFrame({"x": np.arange(15)})).data
