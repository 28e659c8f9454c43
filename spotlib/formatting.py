"""Numbers as a reader expects them, in the report's tables and the notebooks' tables.

Counts are integers (`1337`, never `1337.0` or `1.34e+03`); other numbers keep three
significant digits in fixed notation (`0.0421`, `12.3`, `1340`); only quantities smaller than
1e-3 in size use scientific notation (`1.2e-05`, where fixed notation would print `0.0000`).
Nested dicts become dotted rows instead of `{...}` in a cell.
"""
from __future__ import annotations

import math

SIGNIFICANT = 3
SMALL = 1e-3  # below this (in size), scientific notation


def number(x, significant: int = SIGNIFICANT) -> str:
    """One value as text: integers as integers, floats with `significant` digits, small ones as 1.2e-05."""
    if isinstance(x, bool) or x is None:
        return "–" if x is None else str(x)
    if hasattr(x, "item"):  # numpy scalars
        x = x.item()
    if isinstance(x, int):
        return str(x)
    if not isinstance(x, float):
        return str(x)
    if math.isnan(x):
        return "–"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    if x == 0:
        return "0"
    if abs(x) < SMALL:
        return f"{x:.{significant - 1}e}"
    decimals = max(0, significant - 1 - math.floor(math.log10(abs(x))))
    return f"{x:.{decimals}f}"


def _is_count(values) -> bool:
    """A column of whole numbers (stored as floats by pandas after a transpose or a NaN)."""
    finite = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)]
    return bool(finite) and all(float(v).is_integer() and abs(v) < 1e15 for v in finite)


def tidy(frame, axis: int = 0):
    """A DataFrame of display strings: each column (axis=0) or row (axis=1) of whole numbers as integers,
    every other number by `number`. axis=1 suits a transposed table whose rows are quantities."""
    import pandas as pd

    frame = frame.copy()
    if axis == 1:
        return tidy(frame.T, axis=0).T
    out = pd.DataFrame(index=frame.index)
    for col in frame.columns:
        values = [v.item() if hasattr(v, "item") else v for v in frame[col].tolist()]
        whole = _is_count(values)
        out[col] = [_cell(v, whole) for v in values]
    return out


def _cell(value, whole: bool) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {number(v)}" for k, v in value.items())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–" if value is None else str(value)
    if whole and not math.isnan(value):
        return str(int(value))
    return number(value)


def flatten(mapping: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}: one row per leaf for a two-column table."""
    out = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def value_table(mapping: dict, name: str = "value"):
    """A dict (nested ones flattened) as a one-column table of display strings."""
    import pandas as pd

    flat = flatten(mapping)
    return pd.DataFrame({name: [_cell(v, isinstance(v, float) and v.is_integer()) for v in flat.values()]},
                        index=list(flat))
