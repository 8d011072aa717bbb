"""Data loaders reject malformed files with a message naming file, row, column and value."""

from __future__ import annotations

import shutil

import pytest

from sim.countries import load_countries
from sim.inputs import DATA_DIR, DataError
from sim.providers import load_releases, measured_paths


@pytest.fixture
def data_copy(tmp_path):
    dst = tmp_path / "data"
    shutil.copytree(DATA_DIR, dst)
    return dst


def _edit(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_shipped_data_loads():
    assert load_countries().n == 193
    assert len(load_releases()) > 30
    assert measured_paths().quality.shape[0] == 36


def test_non_numeric_population_is_rejected(data_copy):
    _edit(data_copy / "countries.csv", ",42647492,", ",many,")
    with pytest.raises(DataError, match=r"countries.csv: row \d+, column 'population': "
                                        r"value 'many' is not a number"):
        load_countries(data_copy)


def test_missing_column_is_rejected(data_copy):
    _edit(data_copy / "countries.csv", "income_group", "income_grp")
    with pytest.raises(DataError, match="missing column.*income_group"):
        load_countries(data_copy)


def test_unknown_income_group_is_rejected(data_copy):
    _edit(data_copy / "countries.csv", ",LIC,", ",POOR,")
    with pytest.raises(DataError, match="'POOR' is not one of HIC, UMC, LMC, LIC"):
        load_countries(data_copy)


def test_out_of_range_internet_share_is_rejected(data_copy):
    _edit(data_copy / "countries.csv", ",18.4,", ",184,")
    with pytest.raises(DataError, match="internet_users_pct.*outside the allowed range"):
        load_countries(data_copy)


def test_release_without_source_is_rejected(data_copy):
    path = data_copy / "model_releases.csv"
    lines = path.read_text().splitlines(keepends=True)
    import csv
    import io

    rows = list(csv.reader(io.StringIO("".join(lines))))
    rows[1][rows[0].index("source")] = ""
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    path.write_text(buf.getvalue())
    with pytest.raises(DataError, match="column 'source': empty"):
        load_releases(data_copy)


def test_bad_release_date_is_rejected(data_copy):
    _edit(data_copy / "model_releases.csv", "2024-05-13", "2024-13-13")
    with pytest.raises(DataError, match="release_date.*'2024-13-13' is not a date"):
        load_releases(data_copy)


def test_missing_file_is_reported(data_copy):
    (data_copy / "market_entries.csv").unlink()
    with pytest.raises(DataError, match="market_entries.csv: data file not found"):
        measured_paths(data_copy)


def test_empty_file_is_reported(data_copy):
    (data_copy / "countries.csv").write_text("")
    with pytest.raises(DataError, match="empty"):
        load_countries(data_copy)
