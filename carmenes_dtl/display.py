"""Tables as the chapters show them: rounded to each column's scale, blanks for missing values,
long text wrapped to the page, and at most `MAX_ROWS` rows on the page (the rest folded away)."""
from __future__ import annotations

import numpy as np
import pandas as pd

#: Rows shown on the page; a longer table shows its first rows and folds the whole into a block.
MAX_ROWS = 15
#: Page-width tables: wrapped cells and a smaller font.
STYLE = ("<style>.dtl-table{font-size:0.8em;border-collapse:collapse}"
         ".dtl-table th,.dtl-table td{white-space:normal;max-width:14em;padding:0.15em 0.45em;"
         "overflow-wrap:anywhere}</style>")


def _number_format(values: pd.Series):
    """A formatter for one numeric column: 3 significant digits at the column's largest magnitude
    (0-3 decimals), two significant digits in exponent form below 1e-3; missing values as "–"."""
    finite = np.abs(values[np.isfinite(values)])
    top = finite.max() if len(finite) else 0.0
    if 0 < top < 1e-3:
        return lambda x: "–" if pd.isna(x) else f"{x:.2g}"
    decimals = int(np.clip(2 - np.floor(np.log10(top)), 0, 3)) if top > 0 else 0
    return lambda x: "–" if pd.isna(x) else f"{x:,.{decimals}f}"


def _html(df: pd.DataFrame) -> str:
    kinds = {c: df[c].dtype.kind for c in df}  # b bool, i/u integer, f float
    formats = {c: (lambda x: f"{x:,}") if kind in "iu" else _number_format(df[c]) for c, kind in kinds.items()
               if kind in "iuf"}
    return (df.style.format(formats, na_rep="–", precision=3)
            .set_table_attributes('class="dtl-table"').to_html())


def table(df: pd.DataFrame | pd.Series):
    """`df` as a page-width HTML table (IPython display object); above `MAX_ROWS` rows the page
    shows the first `MAX_ROWS` and the whole table sits in a collapsed block below them."""
    from IPython.display import HTML

    df = df.to_frame() if isinstance(df, pd.Series) else df
    if len(df) <= MAX_ROWS:
        return HTML(STYLE + _html(df))
    return HTML(STYLE + _html(df.head(MAX_ROWS)) + f"<p>First {MAX_ROWS} of {len(df)} rows.</p>"
                f"<details><summary>All {len(df)} rows</summary>{_html(df)}</details>")
