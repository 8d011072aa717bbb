"""Comparison: a scenario against a base, paired on common random numbers.

Both scenarios run with the same seeds, so each seed's difference comes from the policy, not
from noise; the table reports the mean difference and its 5-95 % band across seeds.

KPI names read ``<quantity>_<qualifier>``: ``share_<bloc>_<region>_<year>`` (activity share in
December of that year), ``infra_dependency_<bloc>_<region>_<year>``,
``model_dependency_<bloc>_<region>_<year>``, ``majority_countries_<bloc>_<year>``.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from sim.model import run
from sim.scenario import Scenario

KPI_YEARS = (2030, 2035)
KPI_REGIONS = ("WLD", "HIC", "UMC", "LMC", "LIC")
KPI_BLOCS = ("US", "CN", "EU")


def kpis(result, years=KPI_YEARS, regions=KPI_REGIONS) -> dict[str, float]:
    """Headline KPIs of one run (December values of the given years)."""
    months = [f"{y}-12-01" for y in years]
    out: dict[str, float] = {}
    ad = (result.adoption.filter(pl.col("region").is_in(regions),
                                 pl.col("date").cast(pl.String).is_in(months))
          .group_by("date", "region", "bloc").agg(pl.col("share").sum()))
    for row in ad.iter_rows(named=True):
        if row["bloc"] in (*KPI_BLOCS, "NONE"):
            out[f"share_{row['bloc']}_{row['region']}_{row['date'].year}"] = row["share"]
    dep = result.dependency.filter(pl.col("region").is_in(regions),
                                   pl.col("date").cast(pl.String).is_in(months),
                                   pl.col("bloc").is_in(KPI_BLOCS))
    for row in dep.iter_rows(named=True):
        y = row["date"].year
        out[f"infra_dependency_{row['bloc']}_{row['region']}_{y}"] = row["infra_dependency"]
        out[f"model_dependency_{row['bloc']}_{row['region']}_{y}"] = row["model_dependency"]
    maj = result.kpis.filter(pl.col("metric").str.starts_with("majority_countries_"),
                             pl.col("date").cast(pl.String).is_in(months))
    for row in maj.iter_rows(named=True):
        out[f"{row['metric']}_{row['date'].year}"] = row["value"]
    return dict(sorted(out.items()))


def compare(base: Scenario, other: Scenario, seeds: list[int], n_firms: int) -> pl.DataFrame:
    """Paired KPI deltas (other minus base) across seeds.

    Returns one row per KPI: ``kpi``, ``base`` and ``other`` (means), ``delta`` (mean paired
    difference), ``delta_p5`` and ``delta_p95`` (5th and 95th percentiles across seeds).
    """
    if not seeds:
        raise ValueError("seeds: at least one seed is needed")
    b = [kpis(run(base, seed=s, n_firms=n_firms)) for s in seeds]
    o = [kpis(run(other, seed=s, n_firms=n_firms)) for s in seeds]
    names = sorted(set(b[0]) & set(o[0]))
    rows = []
    for k in names:
        bv = np.array([x[k] for x in b])
        ov = np.array([x[k] for x in o])
        d = ov - bv
        rows.append({"kpi": k, "base": bv.mean(), "other": ov.mean(), "delta": d.mean(),
                     "delta_p5": float(np.percentile(d, 5)),
                     "delta_p95": float(np.percentile(d, 95))})
    return pl.DataFrame(rows)


def headline(table: pl.DataFrame) -> pl.DataFrame:
    """The rows an analyst reads first: world and LMC/LIC shares and dependency, majorities."""
    keep = (pl.col("kpi").str.contains(r"^share_(US|CN|EU)_(WLD|LMC|LIC)_")
            | pl.col("kpi").str.contains(r"^(infra|model)_dependency_(US|CN)_(WLD|LMC|LIC)_")
            | pl.col("kpi").str.starts_with("majority_countries_"))
    return table.filter(keep)
