"""Input data: the sourced tables in ``calibration/data/``, loaded and checked.

Every loader checks the columns and values it relies on and raises :class:`DataError` naming the
file, the row, the column, the value and what is allowed. Nothing here is estimated: where the
model fills a gap (a missing GDP figure, say) it does so in :mod:`sim.countries` and records it.
"""

from __future__ import annotations

import csv
import hashlib
import os
from datetime import date
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("DIFFUSIM_DATA_DIR", ROOT / "calibration" / "data"))

INCOME_GROUPS = ("HIC", "UMC", "LMC", "LIC")


class DataError(ValueError):
    """A data file is missing, malformed or holds a value outside what the model accepts."""


def _path(name: str, data_dir: Path | None = None) -> Path:
    path = (data_dir or DATA_DIR) / name
    if not path.is_file():
        raise DataError(f"{path}: data file not found (the model ships it in calibration/data/)")
    return path


def read_rows(name: str, required: tuple[str, ...], data_dir: Path | None = None) -> list[dict]:
    """Read a CSV into dicts and check that ``required`` columns are present.

    Raises:
        DataError: when the file is missing, empty, or lacks a required column.
    """
    path = _path(name, data_dir)
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: not a readable UTF-8 CSV file ({exc})") from exc
    if not header:
        raise DataError(f"{path}: file is empty (expected a header with {', '.join(required)})")
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; the header has {', '.join(header)}"
        )
    for i, row in enumerate(rows, start=2):
        if None in row:
            raise DataError(f"{path}: row {i} has more cells than the header has columns")
        row["_line"] = i
        row["_file"] = str(path)
    return rows


def parse_float(row: dict, col: str, *, lo: float | None = None, hi: float | None = None,
                required: bool = False) -> float | None:
    """Parse ``row[col]`` as a float within [lo, hi]; empty gives None unless required."""
    raw = (row.get(col) or "").strip()
    where = f"{row['_file']}: row {row['_line']}, column '{col}'"
    if raw == "":
        if required:
            raise DataError(f"{where}: empty, but a number is required")
        return None
    try:
        value = float(raw)
    except ValueError:
        raise DataError(f"{where}: value {raw!r} is not a number") from None
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise DataError(f"{where}: value {value} is outside the allowed range [{lo}, {hi}]")
    return value


def parse_bool(row: dict, col: str) -> bool:
    """Parse ``true``/``false`` (the data files' spelling)."""
    raw = (row.get(col) or "").strip().lower()
    if raw not in ("true", "false"):
        raise DataError(
            f"{row['_file']}: row {row['_line']}, column '{col}': value {raw!r} is not true/false"
        )
    return raw == "true"


def parse_month(row: dict, col: str, *, required: bool = True) -> date | None:
    """Parse YYYY, YYYY-MM or YYYY-MM-DD into the first day of that month."""
    raw = (row.get(col) or "").strip()
    where = f"{row['_file']}: row {row['_line']}, column '{col}'"
    if raw == "":
        if required:
            raise DataError(f"{where}: empty, but a date (YYYY-MM or YYYY-MM-DD) is required")
        return None
    parts = raw.split("-")
    try:
        year = int(parts[0])
        month = int(parts[1]) if len(parts) > 1 else 1
        if len(parts) > 2:
            date(year, month, int(parts[2]))  # validates the day
        if not (1 <= month <= 12) or not (1990 <= year <= 2100):
            raise ValueError
    except (ValueError, IndexError):
        raise DataError(
            f"{where}: value {raw!r} is not a date (YYYY, YYYY-MM or YYYY-MM-DD)") from None
    return date(year, month, 1)


@lru_cache(maxsize=4)
def data_hash(data_dir: Path | None = None) -> str:
    """SHA-256 over every file in the data folder (names and bytes), for manifests."""
    folder = data_dir or DATA_DIR
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
