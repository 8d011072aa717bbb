"""Shared fixtures: small, fast runs of the real model."""

from __future__ import annotations

import pytest

from sim import load_scenario, run
from sim.inputs import ROOT

SMALL = 3000  # firms: enough for every country to have firms, fast enough for many runs


@pytest.fixture(scope="session")
def baseline():
    return load_scenario(ROOT / "scenarios" / "baseline.yaml")


@pytest.fixture(scope="session")
def baseline_result(baseline):
    return run(baseline, seed=1, n_firms=SMALL)
