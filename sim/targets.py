"""Calibration targets: real figures from ``calibration/data/`` paired with model outputs.

Each :class:`Target` says

* which CSV row(s) the observed figure comes from (looked up by file, date, metric and
  ``region_or_family``; the value, unit, reliability and caveat are read from the row, never typed
  in here);
* which model output is its counterpart (a :class:`Quantity` over :class:`Outputs`: a
  ``Result.observables`` metric and group, a ``Result.ecosystem`` column and provider, a
  ``Result.kpis`` metric and region, or provider shares from ``Result.adoption``), over which
  window of months and how the months are reduced (mean or max);
* how the two are compared (:data:`KINDS`): a point with a tolerance, a one-sided bound, a range,
  or an ordering ("A exceeds B"), on a linear, log or logit scale;
* the tolerance, built from the figure's precision and, added in quadrature, a stated
  *mismatch* between what the figure measures and what the model outputs;
* the weight, from the row's reliability (H/M/L, :data:`RELIABILITY_WEIGHT`);
* in words, why the output is a fair counterpart and what differs.

Loss of one target: ``weight * huber(d / tolerance)`` where ``d`` is the distance, on the
target's scale, from the simulated statistic to the observed interval (a point is an interval of
length zero; a lower bound is ``[obs, inf)``; an ordering is a lower bound of 1 on a ratio), and
``huber(z)`` is ``z**2`` up to :data:`HUBER_K` tolerances and grows linearly beyond (a robust
loss: a target the model cannot reach, for want of a mechanism, pulls the fit less than a square
would). A bound is therefore free inside it and penalised outside. Reading the weight as a
variance factor (a less reliable figure is a noisier one), a correct model scores about one per
point target on average. A target is *within its uncertainty* when
``d <= tolerance`` for a point and ``d == 0`` for bounds, ranges and orderings.

Only figures dated 2025-12 or earlier are used (the data files hold nothing later).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache

import numpy as np

from sim.inputs import DataError, parse_float, parse_month, read_rows
from sim.providers import IS_OPEN, PROVIDER_IDS, PROVIDERS

START = date(2023, 1, 1)
KINDS = ("point", "lower", "upper", "range", "order")
SCALES = ("linear", "log", "logit")
RELIABILITY_WEIGHT = {"H": 1.0, "M": 0.7, "L": 0.4}
# Precision of a figure on each scale, before any mismatch: an exact figure (as printed, via a
# faithful copy) and an approximate one ("approx", "about", "nearly", read off a chart).
# logit 0.25 ~ +-6 points around 50 %; 0.5 ~ +-12 points; log 0.25 ~ +-28 %; 0.4 ~ +-50 %.
FIGURE_TOL = {"logit": (0.25, 0.5), "log": (0.25, 0.4), "linear": (0.05, 0.1)}
LOGIT_EPS = 1e-3
HUBER_K = 2.0

OPEN_IDS = tuple(p.id for p, o in zip(PROVIDERS, IS_OPEN) if o)
# Open-weight models as platforms count them: every open-weight provider plus DeepSeek's own API,
# which serves only MIT-licensed open-weight models (Qwen's and Mistral's APIs serve closed
# flagship models too, see model_family_map.csv, so they count as closed).
OPEN_MODEL_IDS = (*OPEN_IDS, "deepseek_api")
CN_OPEN_MODEL_IDS = ("qwen", "deepseek", "cn_open_other", "deepseek_api")
US_IDS = tuple(p.id for p in PROVIDERS if p.bloc == "US")
AI_IDS = PROVIDER_IDS
DEEPSEEK_IDS = ("deepseek", "deepseek_api")


def month_index(d: date) -> int:
    """Months from 2023-01 to ``d``."""
    return (d.year - START.year) * 12 + d.month - START.month


def month_of(index: int) -> date:
    """Month start ``index`` months after 2023-01."""
    return date(START.year + index // 12, index % 12 + 1, 1)


# --------------------------------------------------------------------------------------------
# Model outputs as monthly series


class Outputs:
    """The parts of a :class:`~sim.result.Result` that targets read, as monthly numpy series.

    Built once per run; each frame is touched only when a target needs it (the frames are lazy).
    Regions beyond those in the frames are activity-weighted aggregates built here from the
    country rows and GDP (the firm weights of a country sum to its GDP): ``WLD_EX_CHN``,
    ``NON_HIC`` and World Bank regions such as ``SSA`` (Sub-Saharan Africa).
    """

    def __init__(self, result):
        self.result = result
        self._obs: dict | None = None
        self._eco: dict | None = None
        self._kpi: dict | None = None
        self._usage: dict[str, np.ndarray] = {}
        self._adoption = None

    @property
    def n_months(self) -> int:
        """Months in the run."""
        return len(self.obs(("hf_new_derivatives_share", "CN")))

    def obs(self, key: tuple[str, str]) -> np.ndarray:
        """``Result.observables`` value series for (metric, group)."""
        if self._obs is None:
            self._obs = _series(self.result.observables, ("metric", "group"), "value")
        return self._obs[key]

    def eco(self, key: tuple[str, str]) -> np.ndarray:
        """``Result.ecosystem`` series for (column, provider)."""
        if self._eco is None:
            df = self.result.ecosystem
            self._eco = {}
            for col in ("new_derivatives_k", "derivatives_stock_k", "downloads_share"):
                for k, v in _series(df, ("provider",), col).items():
                    self._eco[(col, k[0])] = v
        return self._eco[key]

    def kpi(self, key: tuple[str, str]) -> np.ndarray:
        """``Result.kpis`` series for (metric, region); ``NON_HIC`` is derived from WLD and HIC."""
        if self._kpi is None:
            import polars as pl

            df = self.result.kpis.filter(pl.col("metric") == "ai_adoption")
            self._kpi = _series(df, ("metric", "region"), "value")
        metric, region = key
        if region == "NON_HIC":
            g = region_gdp()
            w, h = self._kpi[(metric, "WLD")], self._kpi[(metric, "HIC")]
            return (w * g["WLD"] - h * g["HIC"]) / (g["WLD"] - g["HIC"])
        return self._kpi[key]

    def usage(self, region: str) -> np.ndarray:
        """Activity (USD) per month and provider (last column: no AI) in a region.

        From ``Result.adoption`` shares times the region's GDP; ``WLD_EX_CHN`` is the world less
        China, ``SSA`` the World Bank region Sub-Saharan Africa (sum over its countries).
        """
        if region not in self._usage:
            if self._adoption is None:
                import polars as pl

                need = {"WLD", "HIC", "CHN", *USAGE_COUNTRIES, *region_members("SSA")}
                df = self.result.adoption.filter(pl.col("region").is_in(sorted(need)))
                shares = _series(df, ("region", "provider"), "share")
                cols = (*PROVIDER_IDS, "none")
                self._adoption = {r: np.stack([shares[(r, p)] for p in cols], axis=1)
                                  for r in need}
            g = region_gdp()
            a = self._adoption
            if region == "WLD_EX_CHN":
                out = a["WLD"] * g["WLD"] - a["CHN"] * g["CHN"]
            elif region == "SSA":
                out = sum(a[c] * g[c] for c in region_members("SSA"))
            else:
                out = a[region] * g[region]
            self._usage[region] = out
        return self._usage[region]


USAGE_COUNTRIES = ("USA", "CHN", "BLR", "CUB", "RUS")
REGION_CODES = {"SSA": "Sub-Saharan Africa"}


@lru_cache(maxsize=1)
def _country_gdp() -> tuple[dict[str, float], dict[str, tuple[str, ...]], float, float]:
    from sim.countries import default_countries
    from sim.inputs import INCOME_GROUPS

    tab = default_countries()
    gdp = dict(zip(tab.iso3, map(float, tab.gdp)))
    regions: dict[str, list[str]] = {}
    for iso, reg in zip(tab.iso3, tab.region):
        regions.setdefault(reg, []).append(iso)
    hic = float(tab.gdp[tab.income == INCOME_GROUPS.index("HIC")].sum())
    return gdp, {k: tuple(v) for k, v in regions.items()}, float(tab.gdp.sum()), hic


def region_gdp() -> dict[str, float]:
    """GDP (USD) of every modelled country, ``WLD`` and ``HIC``."""
    gdp, _, world, hic = _country_gdp()
    return {**gdp, "WLD": world, "HIC": hic}


def region_members(code: str) -> tuple[str, ...]:
    """ISO3 codes of a World Bank region by short code (``SSA``)."""
    _, regions, _, _ = _country_gdp()
    name = REGION_CODES[code]
    if name not in regions:
        raise DataError(f"countries.csv: no country in World Bank region {name!r}")
    return regions[name]


def _series(df, keys: tuple[str, ...], value: str) -> dict[tuple, np.ndarray]:
    """``{key: values by date}`` for a tidy frame with one row per (key, date)."""
    df = df.sort([*keys, "date"])
    n_t = df["date"].n_unique()
    if n_t == 0 or len(df) % n_t:
        raise ValueError(f"frame is not one row per ({', '.join(keys)}, date)")
    vals = df[value].to_numpy().reshape(-1, n_t)
    cols = [df[k].to_numpy()[::n_t] for k in keys]
    return {tuple(c[i] for c in cols): vals[i] for i in range(len(vals))}


@dataclass(frozen=True)
class Quantity:
    """A monthly model series, named by the output it reads.

    ``source`` is one of ``observables``, ``ecosystem``, ``ecosystem_share`` (a provider's part of
    the column summed over open families), ``kpis`` and ``usage_share`` (activity on ``num``
    providers over activity on ``den`` providers, in ``region``, from ``Result.adoption``).
    """

    source: str
    key: tuple = ()
    num: tuple[str, ...] = ()
    den: tuple[str, ...] = ()
    region: str = "WLD"

    def series(self, out: Outputs) -> np.ndarray:
        """Monthly values of this quantity in one run."""
        if self.source == "observables":
            return out.obs(self.key)
        if self.source == "observables_sum":
            return sum(out.obs((self.key[0], g)) for g in self.key[1:])
        if self.source == "ecosystem":
            return out.eco(self.key)
        if self.source == "ecosystem_share":
            col, prov = self.key
            tot = sum(out.eco((col, p)) for p in OPEN_IDS)
            return _div(out.eco((col, prov)), tot)
        if self.source == "ecosystem_max_other":
            col, prov = self.key
            return np.max(np.stack([out.eco((col, p)) for p in OPEN_IDS if p != prov]), axis=0)
        if self.source == "kpis":
            return out.kpi(self.key)
        if self.source == "token_share":
            fam = "api_token_share_family_xcn"
            num = sum(out.obs((fam, p)) for p in self.num)
            den = sum(out.obs((fam, p)) for p in self.den)
            return _div(num, den)
        if self.source == "usage_share":
            u = out.usage(self.region)
            idx = {p: i for i, p in enumerate(PROVIDER_IDS)}
            num = u[:, [idx[p] for p in self.num]].sum(axis=1)
            den = u[:, [idx[p] for p in self.den]].sum(axis=1)
            return _div(num, den)
        raise ValueError(f"unknown quantity source {self.source!r}")

    def label(self) -> str:
        """Where the value comes from, in words."""
        if self.source == "usage_share":
            return (f"Result.adoption {self.region}: share of {'+'.join(self.num)} in "
                    f"{_den_name(self.den)}")
        if self.source == "token_share":
            return (f"Result.observables api_token_share_family_xcn: {'+'.join(self.num)} in "
                    f"{_den_name(self.den)}")
        if self.source == "observables_sum":
            return f"Result.observables {self.key[0]} {'+'.join(self.key[1:])}"
        if self.source == "ecosystem_share":
            return f"Result.ecosystem {self.key[0]} {self.key[1]} / sum over open families"
        if self.source == "ecosystem_max_other":
            return f"Result.ecosystem {self.key[0]}: largest family other than {self.key[1]}"
        return f"Result.{self.source} {' '.join(self.key)}"


def _den_name(den: tuple[str, ...]) -> str:
    if tuple(den) == AI_IDS:
        return "all AI usage"
    if tuple(den) == OPEN_MODEL_IDS:
        return "open-weight model usage"
    return "+".join(den)


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    return np.divide(a, b, out=np.zeros(np.broadcast_shapes(a.shape, b.shape)), where=b > 0)


def obs(metric: str, group: str) -> Quantity:
    """``Result.observables`` metric and group."""
    return Quantity("observables", (metric, group))


def eco(column: str, provider: str) -> Quantity:
    """``Result.ecosystem`` column and provider."""
    return Quantity("ecosystem", (column, provider))


def kpi(metric: str, region: str) -> Quantity:
    """``Result.kpis`` metric and region."""
    return Quantity("kpis", (metric, region))


def token_share(num: Sequence[str], den: Sequence[str]) -> Quantity:
    """Hosted-usage share of providers ``num`` among ``den`` outside China (OpenRouter-like)."""
    return Quantity("token_share", num=tuple(num), den=tuple(den))


def usage_share(num: Sequence[str], den: Sequence[str], region: str) -> Quantity:
    """Activity share of providers ``num`` among ``den`` in a region (``Result.adoption``)."""
    return Quantity("usage_share", num=tuple(num), den=tuple(den), region=region)


# --------------------------------------------------------------------------------------------
# Combining figures: the same rule is applied to the CSV values and to the model's statistics

COMBINE: dict[str, tuple[int, Callable[[Sequence[float]], float]]] = {
    "value": (1, lambda v: v[0]),
    # ratios are kept within [1e-3, 1e3] so that a share of zero gives a large, finite loss
    "ratio": (2, lambda v: float(np.clip(v[0] / max(v[1], 1e-12), 1e-3, 1e3))),
    "share_of_pair": (2, lambda v: v[0] / (v[0] + v[1]) if v[0] + v[1] > 0 else 0.5),
}
# for the observed side of a range: how the two rows give the interval's ends
RANGE_RULES = ("low_high", "one_minus_first_to_second")


@dataclass(frozen=True)
class RowRef:
    """One row of a calibration CSV: file, date, metric and region_or_family."""

    file: str
    date: str
    metric: str
    group: str


@dataclass(frozen=True)
class Row:
    """A CSV row as read: value in model units, unit text, reliability, caveat, source."""

    ref: RowRef
    value: float
    unit: str
    reliability: str
    caveat: str
    source: str
    note: str
    line: int


UNIT_SCALE = (("percent", 0.01), ("models", 0.001), ("ratio", 1.0), ("tokens", 1.0),
              ("downloads", 1.0))


def read_row(ref: RowRef, data_dir=None) -> Row:
    """Find exactly one row by (date, metric, region_or_family) and read its value.

    Percent becomes a fraction and model counts become thousands (the unit of
    ``derivatives_stock_k``).
    """
    rows = read_rows(ref.file, ("date", "metric", "region_or_family", "value", "unit", "source",
                                "reliability", "caveat"), data_dir)
    hits = [r for r in rows if r["date"] == ref.date and r["metric"] == ref.metric
            and r["region_or_family"] == ref.group]
    if len(hits) != 1:
        raise DataError(f"{ref.file}: expected one row with date {ref.date}, metric "
                        f"{ref.metric!r}, region_or_family {ref.group!r}; found {len(hits)}")
    r = hits[0]
    unit = r["unit"].strip()
    scale = next((s for prefix, s in UNIT_SCALE if unit.lower().startswith(prefix)), None)
    if scale is None:
        raise DataError(f"{r['_file']}: row {r['_line']}, column 'unit': {unit!r} has no known "
                        f"scale; known: {', '.join(p for p, _ in UNIT_SCALE)}")
    rel = r["reliability"].strip()
    if rel not in RELIABILITY_WEIGHT:
        raise DataError(f"{r['_file']}: row {r['_line']}, column 'reliability': {rel!r} is not "
                        "H, M or L")
    parse_month(r, "date")
    value = parse_float(r, "value", lo=0, required=True) * scale
    return Row(ref, value, unit, rel, r["caveat"].strip(), r["source"].strip(),
               r["note"].strip(), r["_line"])


def is_approx(unit: str) -> bool:
    """Whether a unit text marks the figure as approximate."""
    return "approx" in unit.lower()


# --------------------------------------------------------------------------------------------
# Targets


@dataclass(frozen=True)
class Spec:
    """A target as declared (before the rows are read); see :func:`build_targets`."""

    id: str
    rows: tuple[RowRef, ...]
    quantities: tuple[Quantity, ...]
    window: tuple[str, str]
    kind: str
    why: str
    scale: str = "logit"
    combine: str = "value"
    reduce: str = "mean"
    mismatch: float = 0.0
    mismatch_why: str = ""
    approx: bool | None = None  # None: from the unit text of the rows
    precision: float | None = None  # overrides FIGURE_TOL (e.g. a ratio within one source)
    range_rule: str = "low_high"
    windows: tuple[tuple[str, str], ...] = ()  # per quantity, when they differ (growth)
    group: str = ""  # targets of one cross-section share their weight
    reliability: str | None = None  # for orderings without a numeric row
    source: str = ""  # for orderings: where the statement is read
    threshold: float | None = None  # for orderings: 1 (A > B) as a ratio


@dataclass(frozen=True)
class Target:
    """A calibration target: observed interval, model statistic, tolerance and weight."""

    id: str
    kind: str
    scale: str
    lo: float  # observed interval in natural units (a point has lo == hi)
    hi: float
    tolerance: float  # on the target's scale
    weight: float
    reliability: str
    window: tuple[int, int]  # month indices, inclusive (spans every quantity's window)
    quantities: tuple[Quantity, ...]
    combine: str
    reduce: str
    why: str
    mismatch_why: str
    source: str
    caveat: str
    rows: tuple[Row, ...] = field(default=())
    windows: tuple[tuple[int, int], ...] = ()  # per quantity

    @property
    def observed(self) -> float:
        """The observed value (the bound for a bound; the midpoint of a range)."""
        if self.kind == "upper":
            return self.hi
        if self.kind in ("lower", "order"):
            return self.lo
        return 0.5 * (self.lo + self.hi)

    @property
    def end(self) -> date:
        """Last month the target refers to (used to split in- and out-of-sample)."""
        return month_of(self.window[1])

    @property
    def output(self) -> str:
        """The model outputs the target compares, in words."""
        parts = []
        for q, (a, b) in zip(self.quantities, self.windows):
            w0, w1 = (month_of(i).strftime("%Y-%m") for i in (a, b))
            when = w0 if w0 == w1 else f"{self.reduce} {w0}..{w1}"
            parts.append(f"{q.label()} ({when})")
        comb = "" if self.combine == "value" else f"{self.combine} of "
        return comb + "; ".join(parts)

    def statistic(self, out: Outputs) -> float:
        """The simulated statistic for one run (natural units)."""
        vals = []
        for q, (a, b) in zip(self.quantities, self.windows):
            s = q.series(out)
            if b >= len(s):
                raise ValueError(f"target {self.id}: run ends before {month_of(b)}")
            part = s[a:b + 1]
            vals.append(float(part.max() if self.reduce == "max" else part.mean()))
        return float(COMBINE[self.combine][1](vals))

    def rolling(self, out: Outputs) -> np.ndarray:
        """The statistic with its window(s) ending at every month (NaN before they fit).

        At the target's own end month this is :meth:`statistic`; elsewhere it is the same
        statistic shifted in time (a rolling mean, a growth over the same span), for plots.
        """
        series = [np.asarray(q.series(out), dtype=float) for q in self.quantities]
        n = len(series[0])
        end = self.window[1]
        fn = COMBINE[self.combine][1]
        vals = np.full(n, np.nan)
        for m in range(n):
            shift = m - end
            if any(a + shift < 0 for a, _ in self.windows):
                continue
            parts = []
            for s, (a, b) in zip(series, self.windows):
                seg = s[a + shift:b + shift + 1]
                parts.append(float(seg.max() if self.reduce == "max" else seg.mean()))
            vals[m] = fn(parts)
        return vals

    def monthly(self, out: Outputs) -> np.ndarray:
        """Month-by-month statistic for plots (same as :meth:`rolling`)."""
        return self.rolling(out)

    def transform(self, x):
        """Value(s) on the target's scale."""
        x = np.asarray(x, dtype=float)
        if self.scale == "log":
            return np.log(np.clip(x, 1e-9, None))
        if self.scale == "logit":
            p = np.clip(x, LOGIT_EPS, 1 - LOGIT_EPS)
            return np.log(p / (1 - p))
        return x

    def distance(self, sim):
        """Distance on the target's scale from the simulated value(s) to the observed interval."""
        z = self.transform(sim)
        lo = -np.inf if self.kind == "upper" else float(self.transform(self.lo))
        hi = np.inf if self.kind in ("lower", "order") else float(self.transform(self.hi))
        return np.where(z < lo, lo - z, np.where(z > hi, z - hi, 0.0))

    def loss(self, sim):
        """Weighted Huber loss of the distance in tolerance units (0 inside a bound)."""
        z = self.distance(sim) / self.tolerance
        return self.weight * np.where(z <= HUBER_K, z ** 2, 2 * HUBER_K * z - HUBER_K ** 2)

    def within(self, sim) -> bool:
        """Whether a simulated value is within the figure's uncertainty (see module docs)."""
        d = float(self.distance(sim))
        return d <= self.tolerance if self.kind == "point" else d == 0.0


def _window(w: tuple[str, str]) -> tuple[int, int]:
    a, b = (month_index(date(int(s[:4]), int(s[5:7]), 1)) for s in w)
    if b < a:
        raise ValueError(f"window {w}: end before start")
    return a, b


def build_target(spec: Spec, data_dir=None, group_sizes: dict[str, int] | None = None) -> Target:
    """Read a target's rows and turn the declaration into a :class:`Target`."""
    if spec.kind not in KINDS or spec.scale not in SCALES:
        raise ValueError(f"target {spec.id}: kind {spec.kind!r} / scale {spec.scale!r} invalid")
    rows = tuple(read_row(r, data_dir) for r in spec.rows)
    for r in rows:  # a bound in the data must be used as a bound of the same side
        u = r.unit.lower()
        if "lower bound" in u and spec.kind not in ("lower", "range"):
            raise ValueError(f"target {spec.id}: row {r.ref} is a lower bound, not a {spec.kind}")
        if "upper bound" in u and spec.kind not in ("upper", "range"):
            raise ValueError(f"target {spec.id}: row {r.ref} is an upper bound, not a {spec.kind}")
    values = [r.value for r in rows]
    if spec.kind == "order":
        lo = hi = float(spec.threshold if spec.threshold is not None else 1.0)
        reliability = spec.reliability or "L"
        source, caveat = spec.source, "qualitative statement; no figure"
    else:
        if spec.kind == "range":
            if len(values) != 2:
                raise ValueError(f"target {spec.id}: a range needs two rows")
            if spec.range_rule == "low_high":
                lo, hi = values
            elif spec.range_rule == "one_minus_first_to_second":
                lo, hi = 1 - values[0], values[1]
            else:
                raise ValueError(f"target {spec.id}: unknown range rule {spec.range_rule!r}")
            lo, hi = min(lo, hi), max(lo, hi)
        else:
            n, fn = COMBINE[spec.combine]
            if len(values) != n:
                raise ValueError(f"target {spec.id}: {spec.combine} needs {n} row(s)")
            lo = hi = float(fn(values))
        reliability = min((r.reliability for r in rows), key=lambda x: RELIABILITY_WEIGHT[x])
        source = " | ".join(dict.fromkeys(r.source for r in rows))
        caveat = " | ".join(dict.fromkeys(r.caveat for r in rows if r.caveat))
    approx = spec.approx if spec.approx is not None else any(is_approx(r.unit) for r in rows)
    fig = spec.precision if spec.precision is not None else \
        FIGURE_TOL[spec.scale][1 if approx else 0]
    tol = float(np.hypot(fig, spec.mismatch))
    n_group = (group_sizes or {}).get(spec.group, 1) if spec.group else 1
    weight = RELIABILITY_WEIGHT[reliability] / np.sqrt(n_group)
    windows = tuple(_window(w) for w in spec.windows) if spec.windows else \
        (_window(spec.window),) * len(spec.quantities)
    if len(windows) != len(spec.quantities):
        raise ValueError(f"target {spec.id}: one window per quantity")
    span = (min(a for a, _ in windows), max(b for _, b in windows))
    return Target(spec.id, spec.kind, spec.scale, lo, hi, tol, float(weight), reliability,
                  span, spec.quantities, spec.combine, spec.reduce, spec.why,
                  spec.mismatch_why, source, caveat, rows, windows)


# --------------------------------------------------------------------------------------------
# The declared targets

_D = "hf_derivatives_share.csv"
_DL = "hf_downloads_share.csv"
_API = "api_token_share.csv"
_CTRY = "country_adoption.csv"
_SHARE_ORIGIN = "share_of_new_finetuned_models_built_on_base_of_origin"
_MS_WA = "genai_users_share_of_working_age_population"
_MS_DS = "deepseek_share_of_genai_usage"
_OR = "share_of_weekly_tokens_openrouter"
_OR_AVG = "average_share_of_weekly_tokens_openrouter"
_OR_TOK = "cumulative_tokens_study_period_openrouter"

# usage outside China is the counterpart of OpenRouter, a Western-facing router (83 % of its
# tokens are English prompts, 5 % Simplified Chinese: api_token_share.csv)
_OR_WHY = ("OpenRouter routes hosted inference (APIs and hosted open weights) for developers "
           "mostly outside China, so the counterpart is hosted usage outside China: "
           "Result.observables api_token_share_family_xcn (self-hosted use and Chinese firms, "
           "whose domestic API use OpenRouter barely sees, left out). ")
_OR_MIS = ("OpenRouter is self-selected (Chinese open models said to be over-represented); "
           "tokens are not activity-weighted firm usage")

SPECS: tuple[Spec, ...] = (
    # --- Hugging Face derivatives -------------------------------------------------------
    Spec("hf_deriv_cn_2025_09", (RowRef(_D, "2025-09", _SHARE_ORIGIN, "China"),),
         (obs("hf_new_derivatives_share", "CN"),), ("2025-09", "2025-09"), "point",
         why="Share of new fine-tunes built on Chinese bases = the model's share of new "
             "derivatives of Chinese open families among all open families.",
         mismatch=0.2, mismatch_why="the real count covers every base model on the Hub (other "
         "origins, non-LLMs); the model has seven open families and none from other countries"),
    Spec("hf_deriv_cn_mid2025_lb", (RowRef(_D, "2025-07", _SHARE_ORIGIN, "China"),),
         (obs("hf_new_derivatives_share", "CN"),), ("2025-06", "2025-08"), "lower",
         why="Same quantity; 'exceeded 50 % by mid-2025' is a lower bound over a month that is "
             "only approximate, so it applies to the mean of 2025-06..08."),
    Spec("hf_deriv_qwen_2024_01",
         (RowRef(_D, "2024-01", "share_of_new_derivative_models_by_base_family", "Qwen"),),
         (Quantity("ecosystem_share", ("new_derivatives_k", "qwen")),), ("2024-01", "2024-01"),
         "point", approx=True,
         why="Qwen's part of new derivatives = the model's new Qwen derivatives over all open "
             "families' new derivatives that month.",
         mismatch=0.3, mismatch_why="AI-generated summary of the ATOM report; ATOM's "
         "denominator (tracked language-model derivatives) is wider than the seven families"),
    Spec("hf_deriv_useu_over_cn_2024h2", (),
         (Quantity("observables_sum", ("hf_new_derivatives_share", "US", "EU")),
          obs("hf_new_derivatives_share", "CN")),
         ("2024-07", "2024-12"), "order", scale="log", combine="ratio", threshold=None,
         reliability="L", source="HAI brief as reported by neogear.com/Sina Finance "
         "(calibration README, qualitative facts): 'Since January 2025, derivative models based "
         "on open models from Alibaba and DeepSeek have outnumbered those based on US and "
         "European models'",
         why="'Since January 2025 ... outnumbered' implies that in the half-year before, "
             "US+European derivatives outnumbered Chinese ones: the ratio (US+EU)/CN of new "
             "derivatives' shares, mean over 2024-07..12, is at least 1."),
    Spec("hf_stock_qwen_lb", (RowRef(_D, "2025-07", "derivative_model_count", "Qwen"),),
         (eco("derivatives_stock_k", "qwen"),), ("2025-12", "2025-12"), "lower", scale="log",
         why="Qwen derivatives on the Hub = the model's Qwen derivative stock (thousands). The "
             "count's date is ambiguous (mid-2025 or Feb 2026), so it is compared at 2025-12, "
             "the latest month fitted."),
    Spec("hf_stock_llama", (RowRef(_D, "2025-07", "derivative_model_count", "Llama"),),
         (eco("derivatives_stock_k", "llama"),), ("2025-12", "2025-12"), "point", scale="log",
         why="Llama derivatives on the Hub = the model's Llama derivative stock (thousands).",
         mismatch=0.35, mismatch_why="count date ambiguous (mid-2025 to Feb 2026): stocks grow "
         "by up to ~40 % in that span"),
    Spec("hf_stock_deepseek", (RowRef(_D, "2025-07", "derivative_model_count", "DeepSeek"),),
         (eco("derivatives_stock_k", "deepseek"),), ("2025-12", "2025-12"), "point",
         scale="log",
         why="DeepSeek derivatives on the Hub = the model's DeepSeek derivative stock.",
         mismatch=0.35, mismatch_why="count date ambiguous (mid-2025 to Feb 2026)"),
    # --- Hugging Face downloads (denominators differ: compare China's part of US+China) -----
    Spec("dl_cn_of_uscn_2023_11",
         (RowRef(_DL, "2023-11", "share_of_downloads_tracked_open_models", "China"),
          RowRef(_DL, "2023-11", "share_of_downloads_tracked_open_models", "United States")),
         (obs("hf_downloads_share", "CN"), obs("hf_downloads_share", "US")),
         ("2023-11", "2023-11"), "point", combine="share_of_pair",
         why="ATOM tracks open language models, like the model's families; China's part of "
             "US+China downloads removes the denominator (ATOM's 'other' origins are absent "
             "from the model).",
         mismatch=0.2, mismatch_why="the model's download share mixes direct use and the "
         "derivative stock (downloads_deriv_weight), not download counts"),
    Spec("dl_cn_of_uscn_2025_09",
         (RowRef(_DL, "2025-09", "share_of_new_downloads_tracked_open_models", "China"),
          RowRef(_DL, "2025-09", "share_of_new_downloads_tracked_open_models", "United States")),
         (obs("hf_downloads_share", "CN"), obs("hf_downloads_share", "US")),
         ("2025-09", "2025-09"), "point", combine="share_of_pair",
         why="As above, at 2025-09 (monthly downloads).",
         mismatch=0.2, mismatch_why="as above"),
    Spec("dl_cn_of_uscn_longpre",
         (RowRef(_DL, "2025-08", "share_of_hf_downloads_12m_window", "China"),
          RowRef(_DL, "2025-08", "share_of_hf_downloads_12m_window", "United States")),
         (obs("hf_downloads_share", "CN"), obs("hf_downloads_share", "US")),
         ("2024-08", "2025-08"), "point", combine="share_of_pair",
         why="Longpre et al. count all Hub models; China/(China+US) of the 12-month window "
             "(mean 2024-08..2025-08) is the part comparable with the model's LLM families.",
         mismatch=0.4, mismatch_why="different denominator: all Hub models (BERT, vision, "
         "speech) where US developers weigh more than among LLMs"),
    Spec("dl_eu_2025_10",
         (RowRef(_DL, "2025-10", "share_of_downloads_tracked_open_models_low", "Europe"),
          RowRef(_DL, "2025-10", "share_of_downloads_tracked_open_models_high", "Europe")),
         (obs("hf_downloads_share", "EU"),), ("2025-10", "2025-10"), "range",
         why="Europe's (Mistral's) share of tracked open-model downloads = the model's EU "
             "download share (Mistral is the model's only EU open family)."),
    Spec("dl_qwen_2024_lb", (RowRef(_DL, "2024-12", "share_of_all_hf_model_downloads", "Qwen"),),
         (eco("downloads_share", "qwen"),), ("2024-01", "2024-12"), "lower",
         why="'More than 30 % of all model downloads in 2024': a lower bound on a wide "
             "denominator is also a lower bound on the model's narrower one (its open LLM "
             "families), so it bounds the 2024 mean of Qwen's download share. The source is "
             "weak (machine-translated; it cannot be all Hub models, where China had 17 %)."),
    Spec("dl_qwen_top_2025_09", (),
         (eco("downloads_share", "qwen"), Quantity("ecosystem_max_other",
                                                   ("downloads_share", "qwen"))),
         ("2025-09", "2025-09"), "order", scale="log", combine="ratio", reliability="M",
         source="Stanford HAI/DigiChina brief (calibration README): Qwen the most downloaded "
         "LLM family on Hugging Face in Sept 2025; Xinhua: Qwen passed Llama by Oct 2025",
         why="Qwen's download share at least that of every other family at 2025-09."),
    # --- OpenRouter tokens --------------------------------------------------------------
    Spec("or_cn_open_2024_11", (RowRef(_API, "2024-11", _OR, "Chinese open-source models"),),
         (token_share(CN_OPEN_MODEL_IDS, AI_IDS),), ("2024-10", "2024-12"), "point",
         why=_OR_WHY + "Chinese open models = Qwen, DeepSeek, other Chinese open weights and "
             "DeepSeek's API; 'late 2024' is the mean of 2024-10..12.",
         mismatch=0.5, mismatch_why=_OR_MIS),
    Spec("or_cn_open_2025_mean", (RowRef(_API, "2025", _OR_AVG, "Chinese open-source models"),),
         (token_share(CN_OPEN_MODEL_IDS, AI_IDS),), ("2025-01", "2025-12"), "point",
         why=_OR_WHY + "Annual average = mean of 2025's months.",
         mismatch=0.5, mismatch_why=_OR_MIS),
    Spec("or_row_open_2025_mean",
         (RowRef(_API, "2025", _OR_AVG, "Rest-of-world open-source models"),),
         (token_share(tuple(p for p in OPEN_MODEL_IDS if p not in CN_OPEN_MODEL_IDS),
                      AI_IDS),), ("2025-01", "2025-12"), "point",
         why=_OR_WHY + "Open models from the rest of the world = Llama, Gemma, gpt-oss, "
             "Mistral open weights.",
         mismatch=0.5, mismatch_why=_OR_MIS),
    Spec("or_cn_open_2025_peak_ub",
         (RowRef(_API, "2025", "peak_share_of_weekly_tokens_openrouter",
                 "Chinese open-source models"),),
         (token_share(CN_OPEN_MODEL_IDS, AI_IDS),), ("2025-01", "2025-12"), "upper",
         reduce="max", approx=True,
         why=_OR_WHY + "A monthly mean cannot exceed the peak weekly share, so the peak bounds "
             "the largest monthly share of 2025 from above."),
    Spec("or_open_2025_11",
         (RowRef(_API, "2025-11", "share_of_tokens_openrouter", "Closed/proprietary models"),
          RowRef(_API, "2025-11", "share_of_tokens_openrouter",
                 "Open-weight models (all origins)")),
         (token_share(OPEN_MODEL_IDS, AI_IDS),), ("2025-11", "2025-11"), "range",
         range_rule="one_minus_first_to_second",
         why=_OR_WHY + "The two summaries (closed ~70 %, open ~one-third) bracket the open "
             "share: between 1 - 0.70 and 0.33."),
    Spec("or_us_2025_07",
         (RowRef(_API, "2025-07", "share_of_tokens_openrouter_top_models",
                 "US models (OpenAI, Anthropic, Google)"),),
         (token_share(US_IDS, AI_IDS),), ("2025-07", "2025-07"), "point",
         why=_OR_WHY + "US models = every US provider (closed APIs and open weights).",
         mismatch=0.5, mismatch_why=_OR_MIS + "; 'top models' only"),
    Spec("or_deepseek_of_open_2025_06_lb",
         (RowRef(_API, "2025-06", "share_of_oss_tokens_openrouter", "DeepSeek family"),),
         (token_share(DEEPSEEK_IDS, OPEN_MODEL_IDS),), ("2025-04", "2025-06"), "lower",
         why=_OR_WHY + "DeepSeek (weights and own API) over all open-model usage; the month is "
             "approximate ('before the summer inflexion'), so the mean of 2025-04..06."),
    Spec("or_tokens_deepseek_per_qwen",
         (RowRef(_API, "2025-11", _OR_TOK, "DeepSeek"), RowRef(_API, "2025-11", _OR_TOK, "Qwen")),
         (token_share(DEEPSEEK_IDS, AI_IDS), token_share(("qwen",), AI_IDS)),
         ("2024-12", "2025-11"), "point", scale="log", combine="ratio",
         why=_OR_WHY + "Ratio of tokens over the study year = ratio of mean usage shares "
             "over 2024-12..2025-11 (DeepSeek weights and API; Qwen open weights).",
         mismatch=0.35, mismatch_why=_OR_MIS + "; equal month weights while volume grew"),
    Spec("or_tokens_qwen_per_llama",
         (RowRef(_API, "2025-11", _OR_TOK, "Qwen"), RowRef(_API, "2025-11", _OR_TOK, "Llama")),
         (token_share(("qwen",), AI_IDS), token_share(("llama",), AI_IDS)),
         ("2024-12", "2025-11"), "point", scale="log", combine="ratio",
         why=_OR_WHY + "As above, Qwen over Llama.",
         mismatch=0.35, mismatch_why=_OR_MIS + "; equal month weights while volume grew"),
    # --- Enterprise survey ----------------------------------------------------------------
    Spec("menlo_us_open_2024",
         (RowRef(_API, "2024", "share_of_enterprise_llm_usage", "Open-source models"),),
         (usage_share(OPEN_MODEL_IDS, AI_IDS, "USA"),), ("2024-01", "2024-12"), "point",
         why="Menlo Ventures surveys (mostly US) enterprises: the open-model share of firms' AI "
             "usage in the USA, 2024 mean, is the closest counterpart of any figure here.",
         mismatch=0.3, mismatch_why="survey of large enterprises' usage, not activity-weighted"),
    # --- Microsoft AI Economy Institute (people, not firms) ------------------------------
    Spec("ms_world_growth_2025h2",
         (RowRef(_CTRY, "2025-12", "genai_users_share_of_population", "World"),
          RowRef(_CTRY, "2025-06", "genai_users_share_of_population", "World")),
         (kpi("ai_adoption", "WLD"), kpi("ai_adoption", "WLD")), ("2025-04", "2025-12"),
         "point", scale="log", combine="ratio", precision=0.05,
         windows=(("2025-10", "2025-12"), ("2025-04", "2025-06")),
         why="Microsoft counts people, the model activity-weighted firms, so levels differ; the "
             "growth from 2025-06 to 2025-12 (one method, one source) measures diffusion speed "
             "and is comparable. Model: mean ai_adoption WLD over the three months to December "
             "over the three months to June (Microsoft's reporting periods). Both figures come "
             "from one method, so their ratio is precise: 0.05 on the log scale covers the "
             "rounding and a change of telemetry panel.",
         mismatch=0.05, mismatch_why="people vs activity; both figures rounded"),
    Spec("ms_north_2025_12", (RowRef(_CTRY, "2025-12", _MS_WA, "Global North"),),
         (kpi("ai_adoption", "HIC"),), ("2025-10", "2025-12"), "point",
         why="Share of working-age people using genAI in the Global North vs the model's "
             "activity-weighted adoption in high-income countries (the three months to "
             "December).",
         mismatch=0.5, mismatch_why="people vs firm activity; Global North is not exactly "
         "the World Bank high-income group"),
    Spec("ms_south_2025_12", (RowRef(_CTRY, "2025-12", _MS_WA, "Global South"),),
         (kpi("ai_adoption", "NON_HIC"),), ("2025-10", "2025-12"), "point",
         why="As above for the Global South vs all non-high-income countries.",
         mismatch=0.5, mismatch_why="people vs firm activity; Global South is not exactly "
         "the non-high-income group"),
    Spec("ms_north_per_south_2025_12",
         (RowRef(_CTRY, "2025-12", _MS_WA, "Global North"),
          RowRef(_CTRY, "2025-12", _MS_WA, "Global South")),
         (kpi("ai_adoption", "HIC"), kpi("ai_adoption", "NON_HIC")), ("2025-10", "2025-12"),
         "point", scale="log", combine="ratio",
         precision=0.1,
         why="The North/South ratio removes most of the people-vs-activity difference in "
             "levels; both figures come from one report (precision 0.1 on the log scale).",
         mismatch=0.15, mismatch_why="group definitions differ"),
) + tuple(
    Spec(f"ms_{iso.lower()}_per_north_2025_12",
         (RowRef(_CTRY, "2025-12", _MS_WA, name), RowRef(_CTRY, "2025-12", _MS_WA,
                                                         "Global North")),
         (kpi("ai_adoption", iso), kpi("ai_adoption", "HIC")), ("2025-10", "2025-12"), "point",
         scale="log", combine="ratio", group="ms_countries",
         why=f"{name}'s adoption relative to the Global North (a ratio, so people vs activity "
             "cancels to first order) vs the model's adoption in the country over high-income "
             "countries.",
         mismatch=0.25, mismatch_why="few synthetic firms per country; people vs activity")
    for iso, name in (("ARE", "United Arab Emirates"), ("SGP", "Singapore"), ("NOR", "Norway"),
                      ("IRL", "Ireland"), ("FRA", "France"), ("USA", "United States"),
                      ("KOR", "South Korea"))
) + tuple(
    Spec(f"ms_deepseek_{iso.lower()}_2025_12", (RowRef(_CTRY, "2025-12", _MS_DS, name),),
         (usage_share(DEEPSEEK_IDS, AI_IDS, iso),), ("2025-10", "2025-12"), "point",
         group="ms_deepseek",
         why=f"DeepSeek's share of genAI use in {name} vs DeepSeek's (weights and API) share "
             "of firms' AI usage there.",
         mismatch=0.5, mismatch_why="consumer telemetry on Windows devices (undercounts Chinese "
         "domestic apps) vs firm activity")
    for iso, name in (("CHN", "China"), ("BLR", "Belarus"), ("CUB", "Cuba"), ("RUS", "Russia"))
) + (
    Spec("ms_deepseek_africa_ratio",
         (RowRef(_CTRY, "2025-12", "deepseek_usage_ratio_vs_western_countries_low", "Africa"),
          RowRef(_CTRY, "2025-12", "deepseek_usage_ratio_vs_western_countries_high", "Africa")),
         (usage_share(DEEPSEEK_IDS, AI_IDS, "SSA"), usage_share(DEEPSEEK_IDS, AI_IDS, "HIC")),
         ("2025-10", "2025-12"), "range", scale="log", combine="ratio",
         why="'2 to 4 times higher in Africa' than in Western markets: DeepSeek's share of AI "
             "usage in Sub-Saharan Africa over its share in high-income countries (the "
             "comparison group is vague; high-income countries stand for 'Western markets')."),
)


def target_specs() -> tuple[Spec, ...]:
    """The declared targets."""
    return SPECS


@lru_cache(maxsize=8)
def build_targets(until: date | None = None, data_dir=None) -> tuple[Target, ...]:
    """All targets (optionally only those whose window ends by ``until``), rows read."""
    sizes: dict[str, int] = {}
    for s in SPECS:
        if s.group:
            sizes[s.group] = sizes.get(s.group, 0) + 1
    out = tuple(build_target(s, data_dir, sizes) for s in SPECS)
    ids = [t.id for t in out]
    if len(set(ids)) != len(ids):
        raise ValueError("target ids must be unique")
    if until is not None:
        out = tuple(t for t in out if t.end <= until)
    return out


def statistics(result, targets: Sequence[Target]) -> np.ndarray:
    """Every target's simulated statistic for one run (natural units)."""
    out = Outputs(result)
    return np.array([t.statistic(out) for t in targets])


def total_loss(stats: np.ndarray, targets: Sequence[Target]) -> float:
    """Sum of target losses for statistics (mean over seeds) in natural units."""
    return float(sum(float(t.loss(s)) for t, s in zip(targets, stats)))
