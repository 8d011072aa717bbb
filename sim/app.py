"""The app's views, kept out of ``app.py`` so they are importable and testable."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from sim.inputs import ROOT
from sim.model import run
from sim.scenario import load_scenario

SCENARIO_DIR = ROOT / "scenarios"


@st.cache_data(show_spinner=False, max_entries=64)
def cached_run(scenario_yaml: str, seed: int, n_firms: int):
    """One cached run per (scenario, seed, firms)."""
    from sim.scenario import parse_yaml

    return run(parse_yaml(scenario_yaml), seed=seed, n_firms=n_firms)


def main() -> None:
    """Render the page."""
    presets = sorted(p.stem for p in Path(SCENARIO_DIR).glob("*.yaml"))
    st.title("diffusim: who depends on whom in AI")
    preset = st.sidebar.selectbox("Preset", presets, index=presets.index("baseline"),
                                  key="preset")
    seed = st.sidebar.number_input("Seed", min_value=0, value=1, step=1, key="seed")
    scenario = load_scenario(SCENARIO_DIR / f"{preset}.yaml")
    result = cached_run(scenario.to_yaml(), int(seed), 20_000)
    world = result.share("WLD", "bloc")
    st.subheader("World AI usage by bloc (activity-weighted)")
    st.area_chart(world, x="date")
