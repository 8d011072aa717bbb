"""Stress: the cut-off test (bloc B stops serving its APIs to group G at date t).

:func:`cutoff_test` adds a :class:`~sim.scenario.Cutoff` event to a scenario, runs it, and
reports per region the share of AI usage disrupted and the months until 90 % of the disrupted
activity is served again (by another provider), with the recovery curve.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import polars as pl

from sim.model import run
from sim.result import Result
from sim.scenario import Cutoff, Scenario, Target

RECOVERED = 0.9


@dataclass
class StressResult:
    """A cut-off test: per-region summary, recovery curves and the run itself."""

    summary: pl.DataFrame  # region, disrupted_share, months_to_90, served_after_12m
    curve: pl.DataFrame  # date, region, months_since, served_share
    result: Result


def cutoff_test(scenario: Scenario, seed: int, n_firms: int, bloc: str, groups: list[str],
                at: date, months: int | None = None,
                countries: list[str] | None = None) -> StressResult:
    """Cut ``bloc``'s APIs to the target from ``at`` (for ``months``, or for good)."""
    end = None
    if months is not None:
        if months < 1:
            raise ValueError(f"months: {months} is not allowed; use an integer >= 1")
        y, m = divmod(at.month - 1 + months, 12)
        end = date(at.year + y, m + 1, 1)
    event = Cutoff(bloc=bloc, start=at, end=end,
                   target=Target(groups=list(groups), countries=list(countries or [])),
                   note=f"stress test: {bloc} API cut-off")
    if not scenario.start <= at <= scenario.end:
        raise ValueError(f"at: {at} is outside the scenario ({scenario.start} to "
                         f"{scenario.end})")
    stressed = scenario.model_copy(update={"events": [*scenario.events, event]})
    result = run(stressed, seed=seed, n_firms=n_firms)
    cut = result.cutoff.filter(pl.col("date") >= at, pl.col("disrupted_weight") > 0)
    curve = cut.with_columns(
        months_since=((pl.col("date").dt.year() - at.year) * 12
                      + pl.col("date").dt.month() - at.month).cast(pl.Int32)
    ).select("date", "region", "months_since", "served_share", "disrupted_share")
    first = curve.filter(pl.col("months_since") == 0).select("region", "disrupted_share")
    rec = (curve.filter(pl.col("served_share") >= RECOVERED).group_by("region")
           .agg(pl.col("months_since").min().alias("months_to_90")))
    after = curve.filter(pl.col("months_since") == 12).select(
        "region", pl.col("served_share").alias("served_after_12m"))
    summary = (first.join(rec, on="region", how="left").join(after, on="region", how="left")
               .sort("disrupted_share", descending=True))
    return StressResult(summary=summary, curve=curve.drop("disrupted_share"), result=result)
