"""Direction of effects: each worked example states the expectation it checks.

Runs are paired on common random numbers (same seeds), so a difference comes from the lever.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from sim import run
from sim.scenario import Ban, Target

from .conftest import SMALL

SEEDS = (1, 2, 3)


def world_bloc_share(result, bloc: str, year: int, region: str = "WLD") -> float:
    df = result.adoption.filter(pl.col("region") == region, pl.col("bloc") == bloc,
                                pl.col("date").dt.year() == year)
    return float(df["share"].sum()) / 12


def mean_over_seeds(scenario, fn) -> float:
    return float(np.mean([fn(run(scenario, seed=s, n_firms=SMALL)) for s in SEEDS]))


def us_api_share(result) -> float:
    df = result.adoption.filter(pl.col("region") == "WLD", pl.col("bloc") == "US",
                                pl.col("access") == "api", pl.col("date").dt.year() == 2035)
    return float(df["share"].sum()) / 12


def test_cheaper_closed_apis_do_not_lower_their_share(baseline):
    slow = baseline.with_values({"levers.api_price_decline": 0.0})
    fast = baseline.with_values({"levers.api_price_decline": 0.6})
    a, b = mean_over_seeds(slow, us_api_share), mean_over_seeds(fast, us_api_share)
    assert b >= a, f"US closed-API share 2035: {a:.3f} with flat prices, {b:.3f} with -60%/yr"


def test_a_ban_on_a_bloc_lowers_its_share_where_it_applies(baseline):
    banned = baseline.model_copy(update={"events": [
        Ban(start="2026-01-01", bloc="CN", target=Target(groups=["LMC"]))]})
    before = mean_over_seeds(baseline, lambda r: world_bloc_share(r, "CN", 2030, "LMC"))
    after = mean_over_seeds(banned, lambda r: world_bloc_share(r, "CN", 2030, "LMC"))
    assert after < before, f"CN share in LMC 2030: {before:.3f} -> {after:.3f} with a ban"
    assert after == 0.0, "a ban on every sector of a group leaves the bloc no users there"


def test_higher_licence_openness_raises_derivatives(baseline):
    def cn_new_derivs(r):
        obs = r.observables.filter(pl.col("metric") == "hf_new_derivatives_share",
                                   pl.col("group") == "CN", pl.col("date").dt.year() == 2030)
        return float(obs["value"].mean())

    closed = baseline.with_values({"levers.cn_licence_openness": 0.3})
    a = mean_over_seeds(closed, cn_new_derivs)
    b = mean_over_seeds(baseline, cn_new_derivs)
    assert b > a, f"CN share of new derivatives 2030: {a:.3f} closed licences, {b:.3f} open"


def test_export_controls_do_not_raise_the_chinese_share(baseline):
    strict = baseline.with_values({"levers.export_controls": 1.0})
    a = mean_over_seeds(baseline, lambda r: world_bloc_share(r, "CN", 2035))
    b = mean_over_seeds(strict, lambda r: world_bloc_share(r, "CN", 2035))
    assert b <= a, f"CN world share 2035: {a:.3f} baseline, {b:.3f} strict export controls"


def test_a_policy_starting_later_changes_nothing_before_it(baseline):
    later = baseline.model_copy(update={"events": [
        Ban(start="2028-01-01", bloc="US", target=Target(groups=["BRICS"]))]})
    a = run(baseline, seed=5, n_firms=SMALL).adoption
    b = run(later, seed=5, n_firms=SMALL).adoption
    early = pl.col("date") < pl.date(2028, 1, 1)
    assert a.filter(early).equals(b.filter(early)), "common random numbers: identical before"
    assert not a.filter(~early).equals(b.filter(~early)), "and the ban changes what follows"
