"""The documentation stays true to the code."""

from __future__ import annotations

import re
from pathlib import Path

from sim.scenario import parameter_table

ROOT = Path(__file__).resolve().parents[1]


def test_odd_parameter_table_matches_the_schema():
    text = (ROOT / "docs" / "ODD.md").read_text()
    table = re.search(r"<!-- parameter-table:start -->\n(.*?)\n<!-- parameter-table:end -->",
                      text, re.S).group(1)
    assert table == parameter_table(), "run: .venv/bin/python docs/refresh_parameter_table.py"


def test_odd_step_order_matches_the_model_docstring():
    from sim.model import DiffusionModel

    doc = DiffusionModel.__doc__
    text = (ROOT / "docs" / "ODD.md").read_text()
    for step in ("Policy step", "Environment", "Country-level utility terms", "Firms decide",
                 "Ecosystem", "Record"):
        assert step in doc and step in text, step


def test_readme_opens_with_the_two_commands():
    lines = [ln.strip() for ln in (ROOT / "README.md").read_text().splitlines() if ln.strip()]
    code = [ln for ln in lines[:15] if ln.startswith("make ")]
    assert code[:2] == ["make run", "make test"]
