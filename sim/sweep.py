"""Sweeps: one base scenario run over an experiment design, with replicate seeds, at scale.

A sweep file (YAML, see ``docs/sweeps.md``) names a base scenario, the parameters to vary with
their ranges or levels, the design (``grid``, ``list``, ``lhs``, ``sobol``, ``morris``, ``oat``),
the number of replicate seeds and the outcomes and dates to keep. :func:`load_sweep` validates it
into a :class:`Plan` (every design point and seed fixed in advance); :func:`run_sweep` runs what
is missing on a :class:`~sim.executor.Executor` (serial, local processes or a Dask cluster) and
writes, in the output folder::

    sweep.json                            design, versions, git commit, data hash, timings
    results/replicate=R/pNNNNNN.parquet   one file per run: one row per date x outcome
    failures/pNNNNNN-rRRR.json            one file per failed run: its parameters and error
    .lock                                 held while a sweep writes (released on any exit)

A run is ``sim.run(scenario, seed, n_firms)``; it is reduced to the kept outcomes inside the
worker, so only a few hundred numbers travel back. Replicate ``r`` has the same seed at every
design point (common random numbers), so differences between points are paired.

Every file appears whole or not at all (a temporary file in the same folder, then
``os.replace``): a sweep killed at any moment and started again with the same command runs only
the runs that have no file yet, and ends with the results of an uninterrupted sweep.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import io
import itertools
import json
import math
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from difflib import get_close_matches
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import polars as pl
import yaml
from pydantic import BaseModel, BeforeValidator, Field, ValidationError

from sim.scenario import (
    Assumptions,
    Levers,
    Scenario,
    ScenarioError,
    Strict,
    load_scenario,
    parse_scenario,
)

FORMAT_VERSION = "1.0"
MAX_SWEEP_BYTES = 1_000_000
MAX_RUNS = 1_000_000
MAX_SEEDS = 1000
RESULTS = "results"
FAILURES = "failures"
META = "sweep.json"
DEFAULT_EVERY = 12


class SweepError(ScenarioError):
    """A sweep file, option or output folder is not allowed; the message says what is."""


class StorageError(OSError):
    """Results cannot be written (disk full, no permission); what was written stays intact."""


# ---------------------------------------------------------------------------------------------
# Sweep file schema
# ---------------------------------------------------------------------------------------------

def _month(value: Any) -> Any:
    """``YYYY-MM`` (or a date) -> the first day of that month."""
    if isinstance(value, date):
        return date(value.year, value.month, 1)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d{4})-(\d{1,2})(?:-(\d{1,2}))?\s*", value)
        if m and 1 <= int(m.group(2)) <= 12:
            return date(int(m.group(1)), int(m.group(2)), 1)
    raise ValueError("not a month; write YYYY-MM, e.g. 2030-12")


Month = Annotated[date, BeforeValidator(_month)]
Level = bool | int | float


class Parameter(Strict):
    """How one parameter varies: a range (``low``, ``high``) or a list of ``levels``."""

    low: float | None = Field(None, description="lower end of the range")
    high: float | None = Field(None, description="upper end of the range")
    levels: list[Level] | None = Field(None, min_length=2, description="discrete values")


class GridDesign(Strict):
    """Full factorial: every combination of levels (ranges give ``levels`` even steps)."""

    kind: Literal["grid"] = "grid"
    levels: int = Field(3, ge=2, le=101, description="points per ranged parameter")


class ListDesign(Strict):
    """An explicit list of points, each a mapping of parameter name to value."""

    kind: Literal["list"] = "list"
    points: list[dict[str, Level]] = Field(min_length=1)


class LatinHypercubeDesign(Strict):
    """``n`` points of a Latin hypercube (scipy.stats.qmc.LatinHypercube)."""

    kind: Literal["lhs"] = "lhs"
    n: int = Field(ge=2, le=MAX_RUNS)


class SobolDesign(Strict):
    """Saltelli's scheme for Sobol indices (SALib): ``n * (d + 2)`` points, or ``n * (2d + 2)``."""

    kind: Literal["sobol"] = "sobol"
    n: int = Field(ge=2, le=MAX_RUNS, description="base sample size, a power of 2")
    second_order: bool = False


class MorrisDesign(Strict):
    """Morris elementary-effects trajectories (SALib): ``n * (d + 1)`` points."""

    kind: Literal["morris"] = "morris"
    n: int = Field(ge=2, le=MAX_RUNS, description="number of trajectories")
    num_levels: int = Field(4, ge=2, le=100, description="grid levels, an even number")


class OneAtATimeDesign(Strict):
    """The base point, then each parameter alone at its low and high ends (or each level)."""

    kind: Literal["oat"] = "oat"


Design = Annotated[GridDesign | ListDesign | LatinHypercubeDesign | SobolDesign | MorrisDesign
                   | OneAtATimeDesign, Field(discriminator="kind")]
DESIGNS = {c.model_fields["kind"].default: c for c in (
    GridDesign, ListDesign, LatinHypercubeDesign, SobolDesign, MorrisDesign, OneAtATimeDesign)}


class Sweep(Strict):
    """A sweep file, as written (see :class:`Plan` for the resolved design)."""

    name: str = Field("sweep", max_length=200)
    description: str = ""
    scenario: str = Field(description="base scenario YAML, relative to the sweep file")
    end: Month | None = Field(None, description="override the scenario's last month")
    fixed: dict[str, Level] = Field(default_factory=dict, description="constants for all runs")
    parameters: dict[str, Parameter] = Field(default_factory=dict)
    design: Design
    seeds: int = Field(1, ge=1, le=MAX_SEEDS, description="replicate seeds per design point")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="sweep seed: replicate seeds and design")
    firms: int | None = Field(None, ge=1000, description="firms per run (CLI --firms overrides)")
    outcomes: list[str] = Field(min_length=1, description="outcome names or patterns (*, ?)")
    dates: list[Month] | None = Field(None, min_length=1, description="months to keep")
    every: int | None = Field(None, ge=1, le=1200, description="keep every k-th month")


def _allowed_keys(loc: tuple) -> list[str]:
    """Valid keys at the place of an unknown key (for the error message)."""
    parts = [p for p in loc[:-1] if not isinstance(p, int)]
    if not parts:
        return list(Sweep.model_fields)
    if parts[0] == "parameters" and len(parts) == 2:
        return list(Parameter.model_fields)
    if parts[0] == "design" and len(parts) == 2 and parts[1] in DESIGNS:
        return list(DESIGNS[parts[1]].model_fields)
    return []


def _format_error(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            keys = _allowed_keys(err["loc"])
            msg = f"unknown key; valid keys here: {', '.join(keys)}" if keys else "unknown key"
        elif err["type"] == "missing":
            msg = "required; missing"
        value = err.get("input")
        shown = repr(value) if not isinstance(value, dict | list) else type(value).__name__
        if len(shown) > 80:
            shown = shown[:77] + "..."
        lines.append(f"{source}: {loc}: {msg} (got {shown})")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Parameters: what the scenario declares, and how a sweep varies each one
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Declared:
    """A scenario parameter as :mod:`sim.scenario` declares it (type, bounds, unit)."""

    name: str  # section.name, as in Scenario.with_values
    kind: str  # float | int | bool | other
    lo: float | None
    hi: float | None
    unit: str
    meaning: str

    @property
    def allowed(self) -> str:
        """The declared range in words."""
        if self.kind == "bool":
            return "true or false"
        lo = "-inf" if self.lo is None else f"{self.lo:g}"
        hi = "inf" if self.hi is None else f"{self.hi:g}"
        return f"{lo} to {hi}"


@lru_cache(maxsize=1)
def declared_parameters() -> dict[str, Declared]:
    """Every scenario parameter, keyed ``levers.x`` / ``assumptions.y``."""
    out = {}
    for section, model in (("levers", Levers), ("assumptions", Assumptions)):
        for name, f in model.model_fields.items():
            lo = hi = None
            for m in f.metadata:
                lo = getattr(m, "ge", getattr(m, "gt", lo))
                hi = getattr(m, "le", getattr(m, "lt", hi))
            kind = {bool: "bool", int: "int", float: "float"}.get(f.annotation, "other")
            extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
            out[f"{section}.{name}"] = Declared(f"{section}.{name}", kind, lo, hi,
                                                str(extra.get("unit", "")), f.description or "")
    return out


def full_name(name: str, where: str) -> str:
    """``export_controls`` -> ``levers.export_controls``; unknown names list the valid ones."""
    known = declared_parameters()
    if name in known:
        return name
    bare = [k for k in known if k.rpartition(".")[2] == name]
    if "." not in name and len(bare) == 1:
        return bare[0]
    close = get_close_matches(name, list(known), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    numeric = [k for k, d in known.items() if d.kind != "other"]
    raise SweepError(f"{where}: unknown parameter {name!r}{hint} Allowed: {', '.join(numeric)}")


@dataclass(frozen=True)
class Factor:
    """A varied parameter, resolved: its declaration and its range or levels."""

    name: str
    kind: str  # float | int | bool
    low: float | None = None
    high: float | None = None
    levels: tuple | None = None
    unit: str = ""

    def cast(self, value: Any) -> Any:
        """A value in the parameter's own type."""
        if self.kind == "bool":
            return bool(value)
        if self.kind == "int":
            return int(value)
        return float(value)

    def from_unit(self, u: np.ndarray) -> list:
        """Map unit-interval draws to values (uniform over the range or over the levels)."""
        u = np.clip(np.asarray(u, dtype=float), 0.0, 1.0)
        if self.levels is not None:
            k = len(self.levels)
            idx = np.minimum((u * k).astype(int), k - 1)
            return [self.levels[i] for i in idx]
        if self.kind == "int":
            n = int(self.high) - int(self.low) + 1
            return [int(self.low) + int(i) for i in np.minimum((u * n).astype(int), n - 1)]
        return [float(x) for x in self.low + u * (self.high - self.low)]

    def grid(self, n: int) -> list:
        """Grid values: the levels, or ``n`` even steps over the range."""
        if self.levels is not None:
            return list(self.levels)
        steps = np.linspace(self.low, self.high, n)
        if self.kind == "int":
            return sorted({int(round(x)) for x in steps})
        return [float(x) for x in steps]

    def centre(self, base: Any) -> Any:
        """One-at-a-time centre: the base scenario's value when it is in the range/levels."""
        if self.levels is not None:
            return base if base in self.levels else self.levels[0]
        if self.low <= base <= self.high:
            return self.cast(base)
        mid = (self.low + self.high) / 2
        return int(round(mid)) if self.kind == "int" else float(mid)

    def ends(self, centre: Any) -> list:
        """One-at-a-time values: low and high, or every level, other than the centre."""
        values = self.levels if self.levels is not None else (self.low, self.high)
        return [self.cast(v) for v in values if self.cast(v) != centre]

    def describe(self) -> dict:
        """JSON description (for sweep.json)."""
        return {"name": self.name, "kind": self.kind, "low": self.low, "high": self.high,
                "levels": list(self.levels) if self.levels is not None else None,
                "unit": self.unit}


def _check_value(d: Declared, value: Any, where: str) -> Any:
    """A level or a fixed value: the right type and inside the declared bounds."""
    if d.kind == "bool":
        if not isinstance(value, bool):
            raise SweepError(f"{where}: {value!r} is not allowed; {d.name} is true or false")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SweepError(f"{where}: {value!r} is not a number; {d.name} allows {d.allowed}")
    if d.kind == "int" and float(value) != int(value):
        raise SweepError(f"{where}: {value!r} is not an integer; {d.name} allows integers "
                         f"{d.allowed}")
    if not math.isfinite(value) or (d.lo is not None and value < d.lo) or \
            (d.hi is not None and value > d.hi):
        raise SweepError(f"{where}: {value!r} is outside {d.name}'s declared range "
                         f"({d.allowed}{', ' + d.unit if d.unit else ''})")
    return int(value) if d.kind == "int" else float(value)


def _factor(name: str, p: Parameter, source: str) -> Factor:
    where = f"{source}: parameters.{name}"
    d = declared_parameters()[name]
    if d.kind == "other":
        raise SweepError(f"{where}: only numbers and true/false parameters can be varied; "
                         f"set {d.name} in the base scenario instead")
    has_range = p.low is not None or p.high is not None
    if has_range == (p.levels is not None):
        raise SweepError(f"{where}: give either low and high, or levels (a list), not "
                         f"{'both' if has_range else 'neither'}")
    if p.levels is not None:
        levels = [_check_value(d, v, f"{where}.levels") for v in p.levels]
        if len(set(levels)) != len(levels):
            raise SweepError(f"{where}.levels: {p.levels} repeats a value; list each once")
        return Factor(name, d.kind, levels=tuple(levels), unit=d.unit)
    if d.kind == "bool":
        raise SweepError(f"{where}: {name} is true/false; vary it with levels: [true, false]")
    if p.low is None or p.high is None:
        raise SweepError(f"{where}: a range needs both low and high (got low {p.low}, "
                         f"high {p.high})")
    if p.low >= p.high:
        raise SweepError(f"{where}: low {p.low:g} must be below high {p.high:g} (a range with "
                         "low >= high is empty; to hold a value constant put it under fixed)")
    low = _check_value(d, p.low, f"{where}.low")
    high = _check_value(d, p.high, f"{where}.high")
    return Factor(name, d.kind, low=float(low), high=float(high), unit=d.unit)


# ---------------------------------------------------------------------------------------------
# Designs (scipy.stats.qmc and SALib do the sampling)
# ---------------------------------------------------------------------------------------------

def unit_problem(names: list[str]) -> dict:
    """A SALib problem over the unit hypercube (values are mapped per parameter afterwards)."""
    return {"num_vars": len(names), "names": list(names), "bounds": [[0.0, 1.0]] * len(names)}


def design_size(design: BaseModel, factors: list[Factor]) -> int:
    """Number of design points, computed before sampling."""
    d = len(factors)
    match design.kind:
        case "grid":
            return math.prod(len(f.grid(design.levels)) for f in factors)
        case "list":
            return len(design.points)
        case "lhs":
            return design.n
        case "sobol":
            return design.n * (2 * d + 2 if design.second_order else d + 2)
        case "morris":
            return design.n * (d + 1)
        case "oat":
            return 1 + sum(2 if f.levels is None else len(f.levels) - 1 for f in factors)  # at most
    raise AssertionError(design.kind)  # pragma: no cover


def sample_unit(design: BaseModel, problem: dict, seed: int) -> np.ndarray:
    """Unit-hypercube samples of a sampling design (``lhs``, ``sobol``, ``morris``).

    Sobol and Morris come from SALib (``sample(problem, N, seed)``), the Latin hypercube from
    ``scipy.stats.qmc``; ``seed`` makes them reproducible.
    """
    d = problem["num_vars"]
    if design.kind == "lhs":
        from scipy.stats import qmc

        return qmc.LatinHypercube(d, rng=np.random.default_rng(seed)).random(design.n)
    if design.kind == "sobol":
        from SALib.sample import sobol

        return sobol.sample(problem, design.n, calc_second_order=design.second_order,
                            scramble=True, seed=seed)
    if design.kind == "morris":
        from SALib.sample import morris

        return morris.sample(problem, design.n, num_levels=design.num_levels, seed=seed)
    raise ValueError(f"design {design.kind!r} is not a sampling design")


def _seed_of(sweep_seed: int, *key: int) -> int:
    """An integer seed derived from the sweep seed (one SeedSequence stream per key)."""
    return int(np.random.SeedSequence(sweep_seed, spawn_key=key).generate_state(1)[0])


def replicate_seeds(sweep_seed: int, n: int) -> list[int]:
    """Replicate seeds, the same at every design point (common random numbers).

    Replicate ``r`` gets stream ``(1, r)`` of the sweep seed, so adding replicates keeps the
    earlier ones.
    """
    return [_seed_of(sweep_seed, 1, r) for r in range(n)]


# ---------------------------------------------------------------------------------------------
# Outcomes: names, catalogue, reduction of a run inside the worker
# ---------------------------------------------------------------------------------------------

# quantity: (qualifiers, meaning). Names read <quantity>_<qualifier>[_<region>].
QUANTITIES = {
    "share": ("bloc (US, CN, EU, OTHER, NONE=no AI) or access (api, open_weight); region",
              "share of all economic activity using that bloc's / access mode's models "
              "(Result.adoption summed by bloc or access)"),
    "infra_dependency": ("bloc (US, CN, EU, OTHER); region",
                         "share of AI usage on the bloc's APIs (can be cut off overnight)"),
    "model_dependency": ("bloc; region", "share of AI usage on the bloc's open weights"),
    "dependency": ("bloc; region", "infra_dependency + model_dependency: share of AI usage on "
                   "the bloc's models"),
    "ai_adoption": ("region", "share of economic activity using any AI provider"),
    "hhi_providers": ("region", "Herfindahl index of provider shares among AI users"),
    "majority_countries": ("bloc", "countries where the bloc has more than half of AI usage"),
    "hf_new_derivatives_share": ("bloc", "share of new Hugging Face derivatives by base-model "
                                 "origin"),
    "hf_downloads_share": ("bloc", "share of Hugging Face downloads by family origin"),
    "api_token_share": ("bloc", "share of hosted (third-party API) tokens by model origin"),
    "api_token_share_open_closed": ("closed, open", "share of hosted tokens on closed vs open "
                                    "models"),
}


@lru_cache(maxsize=1)
def _regions() -> tuple[tuple[str, ...], np.ndarray, int]:
    from sim import outcomes
    from sim.countries import default_countries

    tab = default_countries()
    names, mat = outcomes.region_matrix(tab.iso3, tab.income)
    return tuple(names), mat, tab.n


@lru_cache(maxsize=1)
def outcome_catalogue() -> dict[str, tuple[str, str, str]]:
    """Every outcome name -> (quantity, qualifier, region); regions are ISO3, WLD, income groups."""
    from sim.outcomes import ACCESS_COLS, BLOCS

    regions = _regions()[0]
    blocs = tuple(BLOCS)
    access = tuple(a for a in dict.fromkeys(ACCESS_COLS) if a != "none")
    cat: dict[str, tuple[str, str, str]] = {}
    for r in regions:
        for q in (*blocs, "NONE", *access):
            cat[f"share_{q}_{r}"] = ("share", q, r)
        for b in blocs:
            for quantity in ("infra_dependency", "model_dependency", "dependency"):
                cat[f"{quantity}_{b}_{r}"] = (quantity, b, r)
        cat[f"ai_adoption_{r}"] = ("ai_adoption", "", r)
        cat[f"hhi_providers_{r}"] = ("hhi_providers", "", r)
    for b in blocs:
        cat[f"majority_countries_{b}"] = ("majority_countries", b, "WLD")
        for quantity in ("hf_new_derivatives_share", "hf_downloads_share", "api_token_share"):
            cat[f"{quantity}_{b}"] = (quantity, b, "WLD")
    for g in ("closed", "open"):
        cat[f"api_token_share_open_closed_{g}"] = ("api_token_share_open_closed", g, "WLD")
    return cat


def expand_outcomes(patterns: list[str], where: str) -> list[str]:
    """Outcome names from names or shell-style patterns (``share_*_WLD``), in order, unique."""
    cat = outcome_catalogue()
    names: list[str] = []
    for pat in patterns:
        hits = [pat] if pat in cat else fnmatch.filter(cat, pat) if any(
            c in pat for c in "*?[") else []
        if not hits:
            close = get_close_matches(pat, list(cat), n=3, cutoff=0.7)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise SweepError(
                f"{where}: unknown outcome {pat!r}{hint} Names read <quantity>_<qualifier>: "
                f"{', '.join(QUANTITIES)} (e.g. share_CN_WLD, infra_dependency_US_LMC, "
                "ai_adoption_WLD, majority_countries_CN); see docs/sweeps.md")
        names.extend(hits)
    return list(dict.fromkeys(names))


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros(np.broadcast_shapes(a.shape, b.shape)), where=b > 0)


def _usage_outcomes(usage: np.ndarray, regions: list[str], rmat: np.ndarray,
                    n_countries: int) -> dict[str, np.ndarray]:
    """Usage-based outcomes (shares, dependency, adoption, HHI, majorities) over time.

    The same formulas as :func:`sim.outcomes.adoption`, :func:`~sim.outcomes.dependency` and
    :func:`~sim.outcomes.kpis`, on arrays only (a run's reduction must cost little next to the
    run); ``tests/test_sweep.py`` checks that both give the same numbers.
    """
    from sim.outcomes import ACCESS_COLS, BLOC_COLS, BLOCS, by_region
    from sim.providers import BLOC_OF, IS_OPEN, N_PROVIDERS

    out: dict[str, np.ndarray] = {}
    reg = by_region(rmat, usage)  # (T, R, P + 1)
    share = _div(reg, reg.sum(axis=2, keepdims=True))
    blocs, access = np.array(BLOC_COLS), np.array(ACCESS_COLS)
    ai = reg[:, :, :N_PROVIDERS]
    ai_tot = ai.sum(axis=2)
    adoption = _div(ai_tot, reg.sum(axis=2))
    hhi = (_div(ai, ai_tot[:, :, None]) ** 2).sum(axis=2)
    for j, r in enumerate(regions):
        for q in (*BLOCS, "NONE"):
            out[f"share_{q}_{r}"] = share[:, j, blocs == q].sum(axis=1)
        for a in ("api", "open_weight"):
            out[f"share_{a}_{r}"] = share[:, j, access == a].sum(axis=1)
        for b, bloc in enumerate(BLOCS):
            infra = _div(ai[:, j, (BLOC_OF == b) & ~IS_OPEN].sum(axis=1), ai_tot[:, j])
            model = _div(ai[:, j, (BLOC_OF == b) & IS_OPEN].sum(axis=1), ai_tot[:, j])
            out[f"infra_dependency_{bloc}_{r}"] = infra
            out[f"model_dependency_{bloc}_{r}"] = model
            out[f"dependency_{bloc}_{r}"] = infra + model
        out[f"ai_adoption_{r}"] = adoption[:, j]
        out[f"hhi_providers_{r}"] = hhi[:, j]
    cu = usage[:, :n_countries, :N_PROVIDERS]
    bloc_use = np.stack([cu[:, :, BLOC_OF == b].sum(axis=2) for b in range(len(BLOCS))], axis=2)
    has = bloc_use.sum(axis=2) > 0
    lead = np.argmax(bloc_use, axis=2)
    share_lead = _div(bloc_use.max(axis=2), bloc_use.sum(axis=2))
    for b, bloc in enumerate(BLOCS):
        out[f"majority_countries_{bloc}"] = ((lead == b) & has & (share_lead > 0.5)).sum(
            axis=1).astype(float)
    return out


def reduce_result(result, names: tuple[str, ...], date_index: tuple[int, ...]) -> np.ndarray:
    """The kept outcomes of one run: an array (dates, outcomes).

    Computed from the run's monthly tallies for the kept months and regions only, with the
    definitions of the full frames of :class:`~sim.result.Result` (observables through
    :func:`sim.outcomes.observables` itself).
    """
    from sim import outcomes

    cat = outcome_catalogue()
    idx = np.asarray(date_index, dtype=np.int64)
    rec = result.record
    all_regions, rmat, n_c = _regions()
    row = {r: i for i, r in enumerate(all_regions)}
    wanted = [cat[n] for n in names]
    regions = sorted({r for q, _, r in wanted}, key=row.get)
    values = _usage_outcomes(rec["usage"][idx], regions, rmat[[row[r] for r in regions]], n_c)
    if any(q in outcomes.SHARE_METRICS for q, _, _ in wanted):
        sub = {k: rec[k][idx] for k in ("new_derivatives", "eco_stock", "builders", "usage",
                                        "selfhost")}
        dl = result.manifest["scenario"]["assumptions"]["downloads_deriv_weight"]
        obs = outcomes.observables(sub, [result.dates[i] for i in idx], dl)
        for (metric, group), df in obs.partition_by("metric", "group", as_dict=True).items():
            values[f"{metric}_{group}"] = df["value"].to_numpy()
    return np.stack([values[n] for n in names], axis=1).astype(np.float64)


# ---------------------------------------------------------------------------------------------
# The plan: a validated sweep with every point and seed fixed
# ---------------------------------------------------------------------------------------------

@dataclass
class Plan:
    """A validated sweep: base scenario, factors, design points, seeds, outcomes, dates."""

    spec: Sweep
    source: str
    base: Scenario
    factors: list[Factor]
    points: list[tuple]  # one tuple of values per design point, in factor order
    unit: np.ndarray | None  # unit-hypercube samples (lhs, sobol, morris)
    seeds: list[int]
    outcomes: list[str]
    dates: list[date]
    date_index: list[int]
    n_firms: int
    centre: int | None = None  # index of the base point (oat)
    extra: dict = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """Varied parameter names, in column order."""
        return [f.name for f in self.factors]

    @property
    def n_runs(self) -> int:
        """Design points times replicate seeds."""
        return len(self.points) * len(self.seeds)

    def values(self, point: int) -> dict[str, Any]:
        """The varied parameters of a design point."""
        return dict(zip(self.names, self.points[point]))

    def run_keys(self) -> list[tuple[int, int]]:
        """Every run as (point, replicate), in submission order."""
        return [(p, r) for p in range(len(self.points)) for r in range(len(self.seeds))]

    def design_record(self) -> dict:
        """The design as JSON (sweep.json)."""
        return {
            "kind": self.spec.design.kind,
            "settings": self.spec.design.model_dump(mode="json", exclude={"points"}),
            "parameters": [f.describe() for f in self.factors],
            "problem": unit_problem(self.names),
            "n_points": len(self.points),
            "n_seeds": len(self.seeds),
            "n_runs": self.n_runs,
            "seeds": self.seeds,
            "centre": self.centre,
            "points": [list(p) for p in self.points],
            "unit": None if self.unit is None else self.unit.tolist(),
        }

    def fingerprint(self, data_hash: str) -> str:
        """Hash of everything that fixes the results: resuming needs the same fingerprint."""
        import hashlib

        key = {"format": FORMAT_VERSION, "scenario": self.base.model_dump(mode="json"),
               "names": self.names, "points": [list(p) for p in self.points],
               "seeds": self.seeds, "n_firms": self.n_firms, "outcomes": self.outcomes,
               "dates": [d.isoformat() for d in self.dates], "data_hash": data_hash}
        text = json.dumps(key, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read_spec(path: Path) -> Sweep:
    source = str(path)
    if not path.is_file():
        raise SweepError(f"{path}: no such sweep file")
    if path.stat().st_size > MAX_SWEEP_BYTES:
        raise SweepError(f"{path}: a sweep file may be at most {MAX_SWEEP_BYTES} bytes")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise SweepError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SweepError(f"{path}: malformed YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise SweepError(f"{path}: top level must be a mapping with keys "
                         f"{', '.join(Sweep.model_fields)} (got {type(data).__name__})")
    try:
        return Sweep.model_validate(data)
    except ValidationError as exc:
        raise SweepError(_format_error(exc, source)) from None


def load_sweep(path: str | Path, n_firms: int | None = None) -> Plan:
    """Read and validate a sweep file into a :class:`Plan`; ``n_firms`` overrides ``firms``.

    Raises:
        SweepError: naming the file, the field, the value and what is allowed.
    """
    from sim.model import DEFAULT_FIRMS, MAX_FIRMS

    path = Path(path)
    spec = _read_spec(path)
    return resolve(spec, str(path), path.parent, n_firms if n_firms is not None else
                   spec.firms or DEFAULT_FIRMS, MAX_FIRMS)


def resolve(spec: Sweep, source: str, folder: Path, n_firms: int,
            max_firms: int = 2_000_000) -> Plan:
    """Resolve a validated sweep spec: base scenario, factors, design, seeds, outcomes, dates."""
    if not (1000 <= n_firms <= max_firms):
        raise SweepError(f"firms: {n_firms} is not allowed; use 1000 to {max_firms}")
    base, fixed = _base_scenario(spec, source, folder)
    factors = _factors(spec, source, fixed)
    design = spec.design
    if design.kind == "sobol" and design.n & (design.n - 1):
        raise SweepError(f"{source}: design.n: {design.n} is not allowed; a sobol design needs "
                         "a power of 2 (e.g. 64, 128, 256) for Saltelli's sequence")
    if design.kind == "morris" and design.num_levels % 2:
        raise SweepError(f"{source}: design.num_levels: {design.num_levels} is not allowed; "
                         "Morris needs an even number of levels (e.g. 4)")
    size = design_size(design, factors)
    if size * spec.seeds > MAX_RUNS:
        raise SweepError(f"{source}: design: {size} points x {spec.seeds} seeds = "
                         f"{size * spec.seeds} runs; at most {MAX_RUNS} are allowed")
    points, unit, centre, factors = _points(spec, factors, base, source)
    outcomes_ = expand_outcomes(spec.outcomes, f"{source}: outcomes")
    dates, date_index = _dates(spec, base, source)
    return Plan(spec=spec, source=source, base=base, factors=factors, points=points, unit=unit,
                seeds=replicate_seeds(spec.seed, spec.seeds), outcomes=outcomes_, dates=dates,
                date_index=date_index, n_firms=n_firms, centre=centre, extra={"fixed": fixed})


def _base_scenario(spec: Sweep, source: str, folder: Path) -> tuple[Scenario, dict]:
    """The base scenario with the sweep's ``end`` and ``fixed`` values applied."""
    try:
        base = load_scenario(folder / spec.scenario)
    except ScenarioError as exc:
        raise SweepError(f"{source}: scenario: {exc}") from None
    if spec.end is not None:
        data = base.model_dump(mode="json")
        data["end"] = spec.end.isoformat()
        try:
            base = parse_scenario(data, f"{source}: end")
        except ScenarioError as exc:
            raise SweepError(str(exc)) from None
    fixed = {}
    for name, value in spec.fixed.items():
        full = full_name(name, f"{source}: fixed")
        fixed[full] = _check_value(declared_parameters()[full], value, f"{source}: fixed.{name}")
    return (base.with_values(fixed) if fixed else base), fixed


def _factors(spec: Sweep, source: str, fixed: dict) -> list[Factor]:
    """The varied parameters: from ``parameters``, or from the points of a list design."""
    design = spec.design
    factors: list[Factor] = []
    if design.kind == "list":
        if spec.parameters:
            raise SweepError(f"{source}: parameters: a list design takes its parameters from "
                             "its points; remove the parameters section")
        for k in design.points[0]:
            d = declared_parameters()[full_name(k, f"{source}: design.points[0]")]
            if d.kind == "other":
                raise SweepError(f"{source}: design.points: {d.name} cannot be varied (only "
                                 "numbers and true/false)")
            factors.append(Factor(d.name, d.kind, unit=d.unit))
        return factors
    for name, p in spec.parameters.items():
        full = full_name(name, f"{source}: parameters")
        if full in fixed:
            raise SweepError(f"{source}: parameters.{name}: also under fixed; a parameter is "
                             "either varied or fixed")
        if full in [f.name for f in factors]:
            raise SweepError(f"{source}: parameters.{name}: given twice")
        factors.append(_factor(full, p, source))
    if not factors and design.kind != "grid":
        raise SweepError(f"{source}: parameters: a {design.kind} design needs at least one "
                         "parameter to vary")
    return factors


def _points(spec: Sweep, factors: list[Factor], base: Scenario,
            source: str) -> tuple[list[tuple], np.ndarray | None, int | None, list[Factor]]:
    """Design points (values in factor order), unit sample, centre index, final factors."""
    design = spec.design
    names = [f.name for f in factors]
    unit = centre = None
    if design.kind == "grid":
        points = list(itertools.product(*(f.grid(design.levels) for f in factors)))
    elif design.kind == "list":
        points = []
        for i, pt in enumerate(design.points):
            where = f"{source}: design.points[{i}]"
            got = {full_name(k, where): v for k, v in pt.items()}
            if set(got) != set(names):
                raise SweepError(f"{where}: has keys {sorted(got)}; every point must set the "
                                 f"same parameters as the first: {sorted(names)}")
            points.append(tuple(_check_value(declared_parameters()[n], got[n], f"{where}.{n}")
                                for n in names))
        for j, f in enumerate(factors):  # the ranges the points span
            vals = [p[j] for p in points]
            factors[j] = Factor(f.name, f.kind, unit=f.unit, **(
                {"levels": tuple(dict.fromkeys(vals))} if f.kind == "bool" else
                {"low": float(min(vals)), "high": float(max(vals))}))
    elif design.kind == "oat":
        current = base.model_dump(mode="json")
        mid = tuple(f.centre(current[f.name.split(".")[0]][f.name.split(".")[1]])
                    for f in factors)
        points = [mid] + [mid[:j] + (v,) + mid[j + 1:]
                          for j, f in enumerate(factors) for v in f.ends(mid[j])]
        centre = 0
    else:
        unit = sample_unit(design, unit_problem(names), _seed_of(spec.seed, 0))
        points = list(zip(*[f.from_unit(unit[:, j]) for j, f in enumerate(factors)]))
    points = [tuple(f.cast(v) for f, v in zip(factors, p)) for p in points]
    # Types and declared bounds are checked per parameter above; building the scenarios also
    # checks any rule across fields (a point that still fails is recorded as a failed run).
    for i, p in enumerate(points[:20_000]):
        try:
            base.with_values(dict(zip(names, p)))
        except ScenarioError as exc:
            raise SweepError(f"{source}: design point {i} {dict(zip(names, p))}: {exc}") from None
    return points, unit, centre, factors


def _dates(spec: Sweep, base: Scenario, source: str) -> tuple[list[date], list[int]]:
    """The kept months and their indices in the run."""
    from sim.outcomes import month_dates

    if spec.dates is not None and spec.every is not None:
        raise SweepError(f"{source}: dates and every: give one of them, not both")
    months = month_dates(base.start, base.n_months)
    if spec.dates is not None:
        pos = {d: i for i, d in enumerate(months)}
        bad = [d.isoformat()[:7] for d in spec.dates if d not in pos]
        if bad:
            raise SweepError(f"{source}: dates: {', '.join(bad)} outside the scenario's months "
                             f"({months[0].isoformat()[:7]} to {months[-1].isoformat()[:7]})")
        index = sorted({pos[d] for d in spec.dates})
    else:
        every = spec.every or DEFAULT_EVERY
        index = sorted({i for i in range(len(months)) if (i + 1) % every == 0}
                       | {len(months) - 1})
    return [months[i] for i in index], index


# ---------------------------------------------------------------------------------------------
# The task a worker runs
# ---------------------------------------------------------------------------------------------

PARENT_ENV = "DIFFUSIM_SWEEP_PARENT"


@lru_cache(maxsize=1)
def _follow_parent() -> None:
    """In a local worker process: exit when the sweep that started it dies (even by SIGKILL).

    A process pool's workers otherwise wait for work forever once their parent is killed.
    Only processes whose parent set :data:`PARENT_ENV` to its own pid do this (not Dask workers,
    not the serial executor).
    """
    import threading

    parent = os.environ.get(PARENT_ENV)
    if parent is None or parent != str(os.getppid()):
        return

    def watch() -> None:
        while os.getppid() == int(parent):
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="diffusim-follow-parent", daemon=True).start()


@lru_cache(maxsize=8)
def _scenario(base_json: str) -> Scenario:
    return parse_scenario(json.loads(base_json))


def simulate(base_json: str, values: dict, seed: int, n_firms: int, names: tuple[str, ...],
             date_index: tuple[int, ...]) -> dict:
    """One run, reduced to its kept outcomes: ``{"values": (dates, outcomes) array, timings}``.

    A pure function of its arguments, so it gives the same numbers serially, on local processes
    or on a Dask worker.
    """
    from sim.model import run

    _follow_parent()
    scenario = _scenario(base_json).with_values(values)
    t0 = time.perf_counter()
    result = run(scenario, seed=seed, n_firms=n_firms)
    t1 = time.perf_counter()
    arr = reduce_result(result, names, date_index)
    t2 = time.perf_counter()
    return {"values": arr, "model_s": t1 - t0, "reduce_s": t2 - t1}


class _Tasks(Mapping):
    """The runs to do, as the lazy ``{key: args}`` mapping :meth:`Executor.map_unordered` takes."""

    def __init__(self, plan: Plan, keys: list[tuple[int, int]]):
        self.plan = plan
        self.keys = keys
        self.base_json = json.dumps(plan.base.model_dump(mode="json"))
        self.names = tuple(plan.outcomes)
        self.index = tuple(plan.date_index)

    def __getitem__(self, key):
        point, rep = key
        return (self.base_json, self.plan.values(point), self.plan.seeds[rep],
                self.plan.n_firms, self.names, self.index)

    def __iter__(self) -> Iterator:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


# ---------------------------------------------------------------------------------------------
# Storage: one Parquet file per run, written atomically
# ---------------------------------------------------------------------------------------------

def run_id(point: int, rep: int) -> str:
    """The run's id: ``p<point>-r<replicate>``."""
    return f"p{point:06d}-r{rep:03d}"


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all.

    A temp file in the same folder, fsync, then ``os.replace``; a failure removes the temp file
    and leaves any older ``path`` as it was.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _dumps(meta: dict) -> str:
    """JSON with one line per design point (indented JSON would take one line per number)."""
    design = meta.get("design") or {}
    rows = {k: design[k] for k in ("points", "unit") if isinstance(design.get(k), list)}
    shown = {**meta, "design": {**design, **{k: f"@@{k}@@" for k in rows}}} if rows else meta
    text = json.dumps(shown, indent=1, default=str)
    for k, value in rows.items():
        body = ",\n   ".join(json.dumps(r, default=str) for r in value)
        text = text.replace(f'"@@{k}@@"', f"[\n   {body}\n  ]" if value else "[]")
    return text + "\n"


class Store:
    """An output folder: ``sweep.json``, ``results/replicate=R/*.parquet``, ``failures/``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._lock_fd: int | None = None

    @property
    def meta_path(self) -> Path:
        """``sweep.json``."""
        return self.root / META

    def open(self) -> None:
        """Create the folder, check it is writable, take the lock, clear stale temp files."""
        try:
            for sub in ("", RESULTS, FAILURES):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=self.root, prefix=".probe-", delete=True)
            probe.close()
            fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageError(f"--out {self.root}: cannot write there "
                               f"({exc.strerror or exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SweepError(f"--out {self.root}: another sweep is writing to this folder; "
                             "wait for it or use another --out") from None
        self._lock_fd = fd
        for tmp in itertools.chain(self.root.glob(".tmp-*"), self.root.glob(f"{RESULTS}/*/.tmp-*"),
                                   self.root.glob(f"{FAILURES}/.tmp-*")):
            with contextlib.suppress(OSError):
                tmp.unlink()  # left by a killed sweep: never a finished file

    def close(self) -> None:
        """Release the lock."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def done(self) -> set[tuple[int, int]]:
        """Runs with a result file."""
        out = set()
        for folder in (self.root / RESULTS).glob("replicate=*"):
            rep = folder.name.partition("=")[2]
            for f in folder.glob("p*.parquet"):
                if rep.isdigit() and re.fullmatch(r"p\d{6}\.parquet", f.name):
                    out.add((int(f.name[1:7]), int(rep)))
        return out

    def failures(self) -> dict[tuple[int, int], dict]:
        """Failed runs (their recorded parameters and error)."""
        out = {}
        for f in (self.root / FAILURES).glob("p*-r*.json"):
            m = re.fullmatch(r"p(\d+)-r(\d+)\.json", f.name)
            if m:
                with contextlib.suppress(OSError, ValueError):
                    out[(int(m.group(1)), int(m.group(2)))] = json.loads(f.read_text())
        return out

    def read_meta(self) -> dict | None:
        """``sweep.json``, or None when the folder has none."""
        if not self.meta_path.is_file():
            return None
        try:
            return json.loads(self.meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise SweepError(f"{self.meta_path}: unreadable ({exc}); this folder does not hold "
                             "a sweep that can be resumed") from None

    def _write(self, path: Path, data: bytes, what: str, n_written: int) -> None:
        try:
            atomic_write(path, data)
        except OSError as exc:
            raise StorageError(
                f"{path}: cannot write {what} ({exc.strerror or exc}); the {n_written} runs "
                f"written before are intact in {self.root}: fix this (free disk space, "
                "permissions) and run the same command to resume") from None

    def write_meta(self, meta: dict, n_written: int = 0) -> None:
        """Write ``sweep.json`` atomically."""
        self._write(self.meta_path, _dumps(meta).encode(), "sweep.json", n_written)

    def write_run(self, point: int, rep: int, frame: pl.DataFrame, n_written: int) -> None:
        """Write one run's rows as ``results/replicate=R/pNNNNNN.parquet``."""
        folder = self.root / RESULTS / f"replicate={rep}"
        try:
            folder.mkdir(exist_ok=True)
        except OSError as exc:
            raise StorageError(f"{folder}: cannot create ({exc.strerror or exc})") from None
        buf = io.BytesIO()
        frame.write_parquet(buf, statistics=False)
        self._write(folder / f"p{point:06d}.parquet", buf.getvalue(), "a run's results",
                    n_written)

    def write_failure(self, point: int, rep: int, record: dict, n_written: int) -> None:
        """Record a failed run."""
        data = (json.dumps(record, indent=1, default=str) + "\n").encode()
        self._write(self.root / FAILURES / f"{run_id(point, rep)}.json", data,
                    "a failure record", n_written)

    def clear_failure(self, point: int, rep: int) -> None:
        """Forget a failure once the run succeeded."""
        with contextlib.suppress(FileNotFoundError):
            (self.root / FAILURES / f"{run_id(point, rep)}.json").unlink()


def scan_results(out_dir: str | Path) -> pl.LazyFrame:
    """Every run's rows of a sweep folder, lazily (filters are pushed down to the files).

    Columns: run_id, replicate, point, seed, date, outcome, value, scenario and the varied
    parameters.
    """
    root = Path(out_dir) / RESULTS
    files = sorted(str(f) for f in root.glob("replicate=*/p*.parquet"))
    if not files:
        raise SweepError(f"{out_dir}: no results yet (run `diffusim sweep` first)")
    lf = pl.scan_parquet(files, hive_partitioning=True)
    cols = lf.collect_schema().names()
    lead = ["run_id", "replicate", "point", "seed", "date", "outcome", "value"]
    return lf.select(*lead, *[c for c in cols if c not in lead])


def read_results(out_dir: str | Path) -> pl.DataFrame:
    """Every run's rows of a sweep folder, sorted by point, replicate, date and outcome."""
    return scan_results(out_dir).sort("point", "replicate", "date", "outcome").collect()


def read_meta(out_dir: str | Path) -> dict:
    """A sweep folder's ``sweep.json``."""
    meta = Store(out_dir).read_meta()
    if meta is None:
        raise SweepError(f"{out_dir}: no sweep.json; not a sweep output folder")
    return meta


# ---------------------------------------------------------------------------------------------
# Running a sweep
# ---------------------------------------------------------------------------------------------

def versions() -> dict[str, str]:
    """Versions of Python and the packages that shape the results."""
    out = {"python": platform.python_version()}
    for pkg in ("diffusim", "numpy", "numba", "polars", "pyarrow", "mesa", "scipy", "SALib",
                "dask", "distributed", "pydantic"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Summary:
    """What one call of :func:`run_sweep` did."""

    total: int
    already: int
    done: int
    failed: int
    wall_s: float
    session: dict

    @property
    def ok(self) -> bool:
        """True when every run of the design has a result."""
        return self.already + self.done == self.total


def _run_frame(plan: Plan, point: int, rep: int, arr: np.ndarray) -> pl.DataFrame:
    n_d, n_o = arr.shape
    n = n_d * n_o
    cols: dict[str, Any] = {
        "run_id": pl.Series([run_id(point, rep)] * n, dtype=pl.String),
        "point": pl.Series([point] * n, dtype=pl.Int64),
        "seed": pl.Series([plan.seeds[rep]] * n, dtype=pl.Int64),
        "date": pl.Series(np.repeat(np.array(plan.dates, dtype="datetime64[D]"), n_o),
                          dtype=pl.Date),
        "outcome": pl.Series(np.tile(np.array(plan.outcomes), n_d), dtype=pl.String),
        "value": pl.Series(arr.reshape(-1), dtype=pl.Float64),
        "scenario": pl.Series([plan.base.name] * n, dtype=pl.String),
    }
    dtype = {"float": pl.Float64, "int": pl.Int64, "bool": pl.Boolean}
    for f, v in zip(plan.factors, plan.points[point]):
        cols[f.name] = pl.Series([v] * n, dtype=dtype[f.kind])
    return pl.DataFrame(cols)


def _check_resumable(meta: dict, plan: Plan, fingerprint: str, data_hash: str,
                     root: Path) -> None:
    if meta.get("format_version") != FORMAT_VERSION or "fingerprint" not in meta:
        raise SweepError(f"{root}/{META}: written by another format "
                         f"({meta.get('format_version')}); use a new --out")
    if meta["fingerprint"] == fingerprint:
        return
    if meta.get("data_hash") != data_hash:
        raise SweepError(f"--out {root}: its runs used other input data (data hash "
                         f"{str(meta.get('data_hash'))[:12]}, now {data_hash[:12]}); mixing "
                         "them would give wrong results: use a new --out")
    was = meta.get("n_firms")
    if was != plan.n_firms:
        raise SweepError(f"--out {root}: its runs used {was} firms, this command "
                         f"{plan.n_firms} (--firms); use the same value to resume, or a new --out")
    raise SweepError(f"--out {root}: holds a different sweep (design, base scenario, seeds, "
                     "outcomes or dates changed since it started); use a new --out to run "
                     "this one, or restore the sweep file to resume")


# One thread per worker process for the numerical libraries: two processes on two cores whose
# OpenBLAS threads spin against each other run several times slower. Dask's nanny sets the same
# variables (distributed.nanny.pre-spawn-environ); local processes get them here.
WORKER_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "POLARS_MAX_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


@contextlib.contextmanager
def _worker_env(kind: str) -> Iterator[None]:
    """While local processes are spawned: :data:`WORKER_ENV` and :data:`PARENT_ENV`.

    The user's own settings of the thread variables are kept; the parent variable is always
    this process.
    """
    if kind != "processes":
        yield
        return
    env = {k: v for k, v in WORKER_ENV.items() if k not in os.environ}
    env[PARENT_ENV] = str(os.getpid())
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _max_pending(executor) -> int | None:
    if executor.kind != "dask":
        return None
    from distributed import default_client

    threads = sum(default_client().nthreads().values())
    return max(4, 2 * threads)


def _new_meta(plan: Plan, fingerprint: str, dhash: str, commit: str) -> dict:
    return {
        "format_version": FORMAT_VERSION, "kind": "diffusim-sweep",
        "name": plan.spec.name, "description": plan.spec.description,
        "sweep_file": str(Path(plan.source).resolve()),
        "spec": plan.spec.model_dump(mode="json"), "fingerprint": fingerprint,
        "base_scenario": plan.base.model_dump(mode="json"), "fixed": plan.extra["fixed"],
        "n_firms": plan.n_firms, "seed": plan.spec.seed, "design": plan.design_record(),
        "outcomes": plan.outcomes, "dates": [d.isoformat() for d in plan.dates],
        "versions": versions(), "git_commit": commit, "data_hash": dhash,
        "created": _now(), "status": "new", "sessions": [],
    }


def _drain(plan: Plan, store: Store, ex, todo: list, n_before: int, old_failures: dict,
           session: dict, progress: bool, file) -> None:
    """Submit ``todo`` to the executor; write each result or failure as it arrives."""
    from tqdm import tqdm

    bar = tqdm(total=plan.n_runs, initial=n_before, desc=plan.spec.name, unit="run",
               disable=not progress, file=file or sys.stderr, dynamic_ncols=True,
               postfix="failed=0")
    t0 = time.perf_counter()
    with bar, _worker_env(ex.kind):
        for key, value, error in ex.map_unordered(simulate, _Tasks(plan, todo),
                                                  max_pending=_max_pending(ex)):
            point, rep = key
            tw = time.perf_counter()
            if session["first_result_s"] is None:  # includes the workers' start-up
                session["first_result_s"] = round(tw - t0, 3)
            written = n_before + session["runs_done"]
            if error is None:
                store.write_run(point, rep, _run_frame(plan, point, rep, value["values"]),
                                written)
                if key in old_failures:
                    store.clear_failure(point, rep)
                session["model_s"] += value["model_s"]
                session["reduce_s"] += value["reduce_s"]
                session["runs_done"] += 1
            else:
                store.write_failure(point, rep, {
                    "run_id": run_id(point, rep), "point": point, "replicate": rep,
                    "seed": plan.seeds[rep], "n_firms": plan.n_firms,
                    "parameters": plan.values(point), "error": error, "when": _now()}, written)
                session["runs_failed"] += 1
                bar.set_postfix_str(f"failed={session['runs_failed']}", refresh=False)
            session["write_s"] += time.perf_counter() - tw
            session["loop_s"] = round(time.perf_counter() - t0, 3)
            bar.update(1)


def run_sweep(plan: Plan, out_dir: str | Path, workers: int | None = None,
              scheduler: str | None = None, progress: bool = True,
              connect_timeout: float = 10.0, file=None) -> Summary:
    """Run every run of ``plan`` that ``out_dir`` does not hold yet; write results as they come.

    Failed runs are recorded in ``failures/`` and tried again by the next call. Raises
    :class:`SweepError` when ``out_dir`` holds another sweep, :class:`StorageError` when
    results cannot be written, :class:`~sim.executor.SchedulerError` when the Dask scheduler
    cannot be reached; in every case what was written before stays intact.
    """
    from concurrent.futures.process import BrokenProcessPool

    from sim.executor import Executor
    from sim.inputs import data_hash
    from sim.result import git_commit

    t_start = time.perf_counter()
    root = Path(out_dir)
    store = Store(root)
    store.open()
    try:
        dhash, commit = data_hash(), git_commit()
        fingerprint = plan.fingerprint(dhash)
        meta = store.read_meta()
        done = store.done()
        if meta is None and done:
            raise SweepError(f"--out {root}: has results but no {META}; not a sweep folder "
                             "this command can resume")
        if meta is not None:
            _check_resumable(meta, plan, fingerprint, dhash, root)
            if meta.get("git_commit") != commit:
                print(f"warning: {root} was started at commit {meta.get('git_commit')}, the "
                      f"code is now at {commit}; resuming anyway", file=sys.stderr)
        keys = plan.run_keys()
        done &= set(keys)
        old_failures = store.failures()
        todo = [k for k in keys if k not in done]
        session = {"started": _now(), "finished": None, "executor": None, "workers": None,
                   "scheduler": scheduler, "runs_before": len(done), "runs_done": 0,
                   "runs_failed": 0, "git_commit": commit, "startup_s": 0.0, "model_s": 0.0,
                   "reduce_s": 0.0, "write_s": 0.0, "first_result_s": None, "loop_s": 0.0,
                   "wall_s": 0.0}
        meta = meta or _new_meta(plan, fingerprint, dhash, commit)
        meta["sessions"].append(session)

        def finish(status: str) -> None:
            n = len(done) + session["runs_done"]
            session.update(finished=_now(), wall_s=round(time.perf_counter() - t_start, 3),
                           **{k: round(session[k], 3) for k in ("model_s", "reduce_s",
                                                                 "write_s")})
            meta["status"] = status if status != "complete" or n == len(keys) else "incomplete"
            meta["runs"] = {"total": len(keys), "done": n,
                            "failed": len(set(store.failures()) & set(keys))}
            meta["timings"] = {k: round(sum(s.get(k) or 0.0 for s in meta["sessions"]), 3)
                               for k in ("wall_s", "startup_s", "model_s", "reduce_s",
                                         "write_s")}
            store.write_meta(meta, n)

        if todo:
            t0 = time.perf_counter()
            with Executor(workers=workers, scheduler=scheduler,
                          connect_timeout=connect_timeout) as ex:
                session.update(executor=ex.kind, workers=None if ex.kind == "dask" else
                               ex.workers, startup_s=round(time.perf_counter() - t0, 3))
                meta["status"] = "running"
                store.write_meta(meta, len(done))
                try:
                    _drain(plan, store, ex, todo, len(done), old_failures, session, progress,
                           file)
                except BrokenProcessPool as exc:
                    raise ChildProcessError(
                        f"a worker process died ({exc}); probably out of memory: try fewer "
                        f"--workers or --firms. The {len(done) + session['runs_done']} runs "
                        "written are intact; run the same command to resume") from None
                except BaseException:
                    with contextlib.suppress(Exception):
                        finish("interrupted")  # best effort: the disk may be full
                    raise
        finish("complete")
        return Summary(total=len(keys), already=len(done), done=session["runs_done"],
                       failed=meta["runs"]["failed"], wall_s=time.perf_counter() - t_start,
                       session=session)
    finally:
        store.close()


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def _cmd_sweep(args) -> int:
    if args.scheduler and args.workers:
        raise SweepError("--workers and --scheduler exclude each other: with --scheduler the "
                         "Dask cluster's workers run the sweep")
    plan = load_sweep(args.sweep, n_firms=args.firms)
    print(f"{plan.spec.name}: {plan.spec.design.kind} design, {len(plan.points)} points x "
          f"{len(plan.seeds)} seeds = {plan.n_runs} runs, {plan.n_firms} firms, "
          f"{plan.base.n_months} months, {len(plan.outcomes)} outcomes x {len(plan.dates)} dates",
          flush=True)
    s = run_sweep(plan, args.out, workers=args.workers, scheduler=args.scheduler,
                  progress=not args.quiet, connect_timeout=args.connect_timeout)
    rate = s.done / s.wall_s if s.wall_s > 0 else 0.0
    print(f"{s.done} runs now, {s.already} before, {s.failed} failed, of {s.total}; "
          f"{s.wall_s:.1f} s ({rate:.1f} runs/s, {s.session['executor'] or 'nothing to run'})")
    print(f"wrote {Path(args.out) / RESULTS}/ (Parquet, one file per run) and "
          f"{Path(args.out) / META}")
    if s.failed:
        print(f"error: {s.failed} runs failed; their parameters and errors are in "
              f"{Path(args.out) / FAILURES}/; run the same command to try them again",
              file=sys.stderr)
        return 1
    return 0


def register(sub) -> None:
    """The ``sweep`` command."""
    from sim.cli import positive_int

    p = sub.add_parser("sweep", help="run a sweep file (designs, seeds; local processes or "
                       "Dask); resumable", description="Run every run of a sweep file that "
                       "--out does not hold yet. See docs/sweeps.md.")
    p.add_argument("sweep", help="sweep YAML file")
    p.add_argument("--out", required=True, help="output folder (created; resumed if it holds "
                   "this sweep)")
    p.add_argument("--workers", type=positive_int("--workers", 1, 512), default=None,
                   help="local processes (default: every core; 1 runs serially)")
    p.add_argument("--scheduler", default=None, help="Dask scheduler address, tcp://HOST:PORT")
    p.add_argument("--firms", type=positive_int("--firms", 1000), default=None,
                   help="firms per run (default: the sweep file's firms, else 20000)")
    p.add_argument("--connect-timeout", type=float, default=10.0,
                   help="seconds to wait for the Dask scheduler (default 10)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_sweep)
