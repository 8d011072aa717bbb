"""Rewrite the parameter table in docs/ODD.md from the scenario schema (run after changes)."""

import re
from pathlib import Path

from sim.scenario import parameter_table

ODD = Path(__file__).with_name("ODD.md")
START, END = "<!-- parameter-table:start -->", "<!-- parameter-table:end -->"


def refreshed(text: str) -> str:
    """ODD text with the table between the markers replaced."""
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    return pattern.sub(lambda _: f"{START}\n{parameter_table()}\n{END}", text)


if __name__ == "__main__":
    ODD.write_text(refreshed(ODD.read_text()))
    print(f"refreshed the parameter table in {ODD}")
