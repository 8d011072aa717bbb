"""One worked example per lever: each moves its outcome in the documented direction.

Runs are paired (same seeds) so the difference is the lever's, not noise's.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from sim import run
from sim.scenario import Cutoff, DataLocalisation, SecurityShock, SovereignAI, Target, Trigger

from .conftest import SMALL

SEEDS = (1, 2)


def share(result, *, year: int, region: str = "WLD", **where) -> float:
    df = result.adoption.filter(pl.col("region") == region, pl.col("date").dt.year() == year)
    for col, value in where.items():
        df = df.filter(pl.col(col) == value)
    return float(df["share"].sum()) / 12


def paired(base, other, fn) -> tuple[float, float]:
    a = np.mean([fn(run(base, seed=s, n_firms=SMALL)) for s in SEEDS])
    b = np.mean([fn(run(other, seed=s, n_firms=SMALL)) for s in SEEDS])
    return float(a), float(b)


def test_meta_going_closed_lowers_llamas_share(baseline):
    def llama_2026_2035(r):
        df = r.adoption.filter(pl.col("region") == "WLD", pl.col("provider") == "llama",
                               pl.col("date") >= pl.date(2026, 1, 1))
        return float(df["share"].mean())

    def llama_derivatives_2030(r):
        df = r.ecosystem.filter(pl.col("provider") == "llama", pl.col("date").dt.year() == 2030)
        return float(df["new_derivatives_k"].mean())

    closed = baseline.with_values({"levers.meta_open_weights": False})
    a, b = paired(baseline, closed, llama_2026_2035)
    assert b < a, f"Llama world share 2026-2035: {a:.5f} open, {b:.5f} when Meta goes closed"
    a, b = paired(baseline, closed, llama_derivatives_2030)
    assert b < a, f"new Llama derivatives 2030: {a:.3f}k/month open, {b:.3f}k when closed"


def test_us_open_investment_raises_us_open_weights(baseline):
    push = baseline.with_values({"levers.us_open_investment": 3.0,
                                 "levers.gap_convergence": 0.5})
    a, b = paired(baseline.with_values({"levers.gap_convergence": 0.5}), push,
                  lambda r: share(r, year=2035, bloc="US", access="open_weight"))
    assert b > a, f"US open-weight share 2035: {a:.4f} trend, {b:.4f} with a push"


def test_distillation_makes_open_weights_gain(baseline):
    slow = baseline.with_values({"levers.distillation_efficiency": 0.0})
    fast = baseline.with_values({"levers.distillation_efficiency": 0.6})
    a, b = paired(slow, fast, lambda r: share(r, year=2035, access="open_weight"))
    assert b > a, f"open-weight share 2035: {a:.4f} no distillation, {b:.4f} with -60%/yr"


def test_gap_convergence_helps_the_providers_behind_the_frontier(baseline):
    fast = baseline.with_values({"levers.gap_convergence": 1.5})
    a, b = paired(baseline, fast, lambda r: share(r, year=2035, bloc="US", access="api"))
    assert b <= a, f"US closed-API (frontier) share 2035: {a:.4f} -> {b:.4f} with convergence"


def test_data_localisation_moves_firms_off_foreign_apis(baseline):
    law = baseline.model_copy(update={"events": [DataLocalisation(
        start="2027-01-01", strength=2.0, target=Target(groups=["EEA"]))]})

    def foreign_api(r):
        return share(r, year=2030, region="DEU", bloc="US", access="api") + \
            share(r, year=2030, region="DEU", bloc="CN", access="api")

    a, b = paired(baseline, law, foreign_api)
    assert b < a, f"foreign API share in Germany 2030: {a:.4f} -> {b:.4f} with localisation"


def test_security_shock_lowers_trust_and_share_of_the_bloc(baseline):
    shock = baseline.model_copy(update={"events": [SecurityShock(
        start="2026-01-01", bloc="CN", size=2.0, half_life_months=24)]})
    a, b = paired(baseline, shock, lambda r: share(r, year=2027, bloc="CN"))
    assert b < a, f"CN world share 2027: {a:.4f} -> {b:.4f} after a security shock"


def test_sovereign_ai_raises_open_weight_use_in_the_target(baseline):
    prog = baseline.model_copy(update={"events": [SovereignAI(
        start="2026-01-01", subsidy=0.9, target=Target(groups=["LIC"]))]})
    a, b = paired(baseline, prog, lambda r: share(r, year=2030, region="LIC",
                                                   access="open_weight"))
    assert b >= a, f"open-weight share in LIC 2030: {a:.4f} -> {b:.4f} with sovereign AI"


def test_cutoff_removes_the_blocs_apis_in_the_target_while_it_lasts(baseline):
    cut = baseline.model_copy(update={"events": [Cutoff(
        start="2027-01-01", end="2029-01-01", bloc="US", target=Target(groups=["LMC"]))]})
    r = run(cut, seed=1, n_firms=SMALL)
    during = share(r, year=2028, region="LMC", bloc="US", access="api")
    assert during == 0.0, "no US API usage in LMC countries during the cut-off"
    after = share(r, year=2031, region="LMC", bloc="US", access="api")
    assert after > 0.0, "US APIs win users back after the cut-off ends"


def test_trigger_starts_programmes_where_dependency_is_high(baseline):
    trig = baseline.model_copy(update={"events": [Trigger(
        start="2026-01-01", threshold=0.5, action="sovereign_ai", target=Target(groups=["LIC"]))]})
    r = run(trig, seed=1, n_firms=SMALL)
    fired = r.policies.filter(pl.col("origin") == "trigger")
    assert fired.height > 0, "LIC countries above 50% foreign dependency start a programme"
    from sim.countries import default_countries

    tab = default_countries()
    lic = {c for c, i in zip(tab.iso3, tab.income) if i == 3}
    assert set(fired["country"]) <= lic, "only target countries are triggered"
    assert fired.group_by("country").len()["len"].max() == 1, "a trigger fires once a country"


def test_faster_reconsideration_speeds_adoption(baseline):
    slow = baseline.with_values({"assumptions.rho": 0.02})
    fast = baseline.with_values({"assumptions.rho": 0.2})
    a, b = paired(slow, fast, lambda r: 1 - share(r, year=2024, provider="none"))
    assert b > a, f"AI adoption 2024: {a:.3f} at rho=0.02, {b:.3f} at rho=0.2"


def test_more_lock_in_means_fewer_switches(baseline):
    def switches(r):
        df = r.adoption.filter(pl.col("region") == "WLD", pl.col("provider") != "none")
        wide = df.pivot(on="provider", index="date", values="share").drop("date").to_numpy()
        return float(np.abs(np.diff(wide[36:], axis=0)).sum())

    loose = baseline.with_values({"assumptions.switch_cost": 0.0,
                                  "assumptions.switch_growth": 0.0})
    tight = baseline.with_values({"assumptions.switch_cost": 4.0})
    a, b = paired(loose, tight, switches)
    assert b < a, f"share churn after 2025: {a:.3f} without lock-in, {b:.3f} with"
