"""Providers: the model families firms choose between, and their quality, price and licence paths.

The catalogue (bloc, access mode, which data rows belong to which provider) is fixed here; the
numbers come from ``calibration/data/``:

* quality: the Epoch Capabilities Index (ECI) of each release in ``model_releases.csv``; a
  release measured only on GPQA Diamond gets an ECI from a straight-line fit of ECI on GPQA over
  the releases measured on both (r = 0.975 on 25 models). A provider's quality at a month is the
  best ECI it has released so far. Between its market entry (``market_entries.csv``) and its
  first measured release, quality is back-cast along the measured frontier's average slope,
  capped by the weakest measured provider of that month, less the ``unmeasured_gap``
  assumption (an unmeasured model is assumed no better than any measured one).
* price: list price per million tokens, blended 3:1 input:output, running median over the
  provider's priced releases; a provider with no priced release takes the median of its
  (bloc, access) group, or of its access mode.
* licence openness: a score of the licence of the provider's latest release (see
  :data:`LICENCE_SCORES`); closed APIs score 0.
* security: 1 - the share of overtly malicious requests a model complied with under a common
  jailbreak in NIST CAISI's evaluation (2025-09-30): 94 % for DeepSeek R1-0528, 8 % for the US
  reference models. Providers CAISI did not evaluate take the ``security_unmeasured`` assumption.

After the last data month (2025-12) the paths follow the scenario's levers (see
:func:`trajectories`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np

from sim.inputs import DataError, parse_bool, parse_float, parse_month, read_rows

BLOCS = ("US", "CN", "EU", "OTHER")


@dataclass(frozen=True)
class Provider:
    """One model family in one access mode."""

    id: str
    name: str
    bloc: str
    access: str  # "api" | "open_weight"
    ecosystem_of: str | None = None  # an API that serves an open family shares its ecosystem
    security_measured: float | None = None  # 1 - CAISI jailbreak compliance, where measured


# CAISI (2025-09-30): DeepSeek R1-0528 complied with 94 % of malicious requests, US models 8 %.
_CAISI_DEEPSEEK = 1 - 0.94
_CAISI_US = 1 - 0.08

PROVIDERS: tuple[Provider, ...] = (
    Provider("openai", "OpenAI API", "US", "api", security_measured=_CAISI_US),
    Provider("anthropic", "Anthropic API", "US", "api", security_measured=_CAISI_US),
    Provider("google", "Google Gemini API", "US", "api", security_measured=_CAISI_US),
    Provider("llama", "Meta Llama (open weights)", "US", "open_weight",
             security_measured=_CAISI_US),
    Provider("gemma", "Google Gemma (open weights)", "US", "open_weight",
             security_measured=_CAISI_US),
    Provider("gpt_oss", "OpenAI gpt-oss (open weights)", "US", "open_weight",
             security_measured=_CAISI_US),
    Provider("qwen", "Alibaba Qwen (open weights)", "CN", "open_weight"),
    Provider("deepseek", "DeepSeek (open weights)", "CN", "open_weight",
             security_measured=_CAISI_DEEPSEEK),
    Provider("cn_open_other", "Other Chinese open weights (Kimi, GLM)", "CN", "open_weight"),
    Provider("qwen_api", "Qwen API (Alibaba Cloud, China)", "CN", "api", ecosystem_of="qwen"),
    Provider("deepseek_api", "DeepSeek API and app (China)", "CN", "api", ecosystem_of="deepseek",
             security_measured=_CAISI_DEEPSEEK),
    Provider("mistral", "Mistral (open weights)", "EU", "open_weight"),
    Provider("mistral_api", "Mistral API", "EU", "api", ecosystem_of="mistral"),
)
PROVIDER_IDS = tuple(p.id for p in PROVIDERS)
INDEX = {p.id: i for i, p in enumerate(PROVIDERS)}
N_PROVIDERS = len(PROVIDERS)
BLOC_OF = np.array([BLOCS.index(p.bloc) for p in PROVIDERS], dtype=np.int64)
IS_OPEN = np.array([p.access == "open_weight" for p in PROVIDERS])
US_OPEN = np.array([p.bloc == "US" and p.access == "open_weight" for p in PROVIDERS])
CN = BLOC_OF == BLOCS.index("CN")

# Licence openness score by licence class: a modelling scale, not data. Permissive licences
# (MIT, Apache-2.0; Epoch "unrestricted") allow any use and redistribution = 1; community
# licences with use restrictions (Llama, Gemma; Epoch "restricted use") = 0.6; non-commercial = 0.3;
# closed API = 0.
LICENCE_SCORES = {
    "mit": 1.0, "apache-2.0": 1.0, "unrestricted": 1.0,
    "restricted use": 0.6, "community license": 0.6,
    "non-commercial": 0.3,
    "api access": 0.0, "hosted access": 0.0,
}

DATA_START = date(2023, 1, 1)
DATA_END = date(2025, 12, 1)  # last month fitted on; later figures are kept for validation


def month_index(d: date, start: date = DATA_START) -> int:
    """Months from ``start`` to ``d`` (both month starts)."""
    return (d.year - start.year) * 12 + (d.month - start.month)


def licence_score(licence: str) -> float:
    """Openness score of a licence string from ``model_releases.csv``."""
    text = licence.lower()
    for key, score in LICENCE_SCORES.items():
        if key in text:
            return score
    raise DataError(f"licence {licence!r} has no openness score; known classes: "
                    f"{', '.join(LICENCE_SCORES)}")


@dataclass(frozen=True)
class Release:
    """One model release as the model uses it."""

    provider: str
    model: str
    month: date
    eci: float
    eci_imputed: bool
    price: float | None  # blended USD per million tokens
    openness: float | None  # licence openness score; None for a quality anchor (no licence)


def load_releases(data_dir=None) -> list[Release]:
    """Releases from ``model_releases.csv`` mapped to providers by ``model_family_map.csv``."""
    fam = read_rows("model_family_map.csv", ("family", "open_weight", "provider"), data_dir)
    family_map = {}
    for r in fam:
        if r["provider"] not in INDEX:
            raise DataError(f"{r['_file']}: row {r['_line']}, column 'provider': "
                            f"{r['provider']!r} is not one of {', '.join(PROVIDER_IDS)}")
        family_map[(r["family"], parse_bool(r, "open_weight"))] = r["provider"]
    rows = read_rows("model_releases.csv", (
        "family", "model", "release_date", "license", "open_weight", "price_in_usd_per_mtok",
        "price_out_usd_per_mtok", "quality_metric", "quality_value", "source"), data_dir)
    by_model: dict[str, dict] = {}
    for r in rows:
        if not r["source"].strip():
            raise DataError(f"{r['_file']}: row {r['_line']}, column 'source': empty; every "
                            "figure must carry its source")
        key = (r["family"], parse_bool(r, "open_weight"))
        if key not in family_map:
            raise DataError(f"{r['_file']}: row {r['_line']}: family {r['family']!r} "
                            f"(open_weight={key[1]}) has no provider in model_family_map.csv")
        metric = r["quality_metric"].lower()
        entry = by_model.setdefault(r["model"], {
            "provider": family_map[key], "month": parse_month(r, "release_date"),
            "licence": r["license"], "pin": parse_float(r, "price_in_usd_per_mtok", lo=0),
            "pout": parse_float(r, "price_out_usd_per_mtok", lo=0)})
        if "eci" in metric or "capabilities index" in metric:
            entry["eci"] = parse_float(r, "quality_value", lo=50, hi=250, required=True)
        elif "gpqa" in metric:
            entry["gpqa"] = parse_float(r, "quality_value", lo=0, hi=1, required=True)
        else:
            raise DataError(f"{r['_file']}: row {r['_line']}, column 'quality_metric': "
                            f"{r['quality_metric']!r} is neither ECI nor GPQA Diamond")
    pairs = np.array([(m["gpqa"], m["eci"]) for m in by_model.values()
                      if "gpqa" in m and "eci" in m])
    if len(pairs) < 5:
        raise DataError("model_releases.csv: fewer than 5 models measured on both ECI and GPQA")
    slope, intercept = np.polyfit(pairs[:, 0], pairs[:, 1], 1)
    out = []
    for model, m in sorted(by_model.items(), key=lambda kv: (kv[1]["month"], kv[0])):
        imputed = "eci" not in m
        eci = m["eci"] if not imputed else intercept + slope * m["gpqa"]
        price = None
        if m["pin"] is not None and m["pout"] is not None:
            price = (3 * m["pin"] + m["pout"]) / 4  # 3:1 input:output blend
        out.append(Release(m["provider"], model, m["month"], float(eci), imputed, price,
                           licence_score(m["licence"])))
    return out


def load_entries(data_dir=None) -> dict[str, date]:
    """Market entry month per provider from ``market_entries.csv`` (sourced dates)."""
    rows = read_rows("market_entries.csv", ("provider", "entry_date", "source"), data_dir)
    out = {}
    for r in rows:
        if r["provider"] not in INDEX:
            raise DataError(f"{r['_file']}: row {r['_line']}, column 'provider': "
                            f"{r['provider']!r} is not one of {', '.join(PROVIDER_IDS)}")
        out[r["provider"]] = parse_month(r, "entry_date")
    return out


def load_anchors(data_dir=None) -> list[Release]:
    """Quality anchors read from notes of sourced rows (``quality_anchors.csv``)."""
    rows = read_rows("quality_anchors.csv", ("provider", "model", "date", "eci", "source"),
                     data_dir)
    return [Release(r["provider"], r["model"], parse_month(r, "date"),
                    parse_float(r, "eci", lo=50, hi=250, required=True), False, None, None)
            for r in rows]


@dataclass(frozen=True)
class MeasuredPaths:
    """Monthly provider paths over the data window, 2023-01 .. 2025-12."""

    quality: np.ndarray  # (T_data, P) ECI, nan before entry
    price: np.ndarray  # (T_data, P) blended USD / Mtok
    openness: np.ndarray  # (T_data, P)
    entry: np.ndarray  # (P,) month index of market entry (may be negative: before 2023-01)
    frontier_slope: float  # ECI points per month, least squares over the measured frontier
    releases: tuple[Release, ...]
    backcast: np.ndarray  # (T_data, P) bool: quality back-cast, not measured


def measured_paths(data_dir=None) -> MeasuredPaths:
    """Build monthly quality, price and openness paths from the release data."""
    releases = load_releases(data_dir)
    anchors = load_anchors(data_dir)
    entries = load_entries(data_dir)
    n_t = month_index(DATA_END) + 1
    own: dict[str, list[Release]] = {p.id: [] for p in PROVIDERS}
    for r in releases + anchors:
        own[r.provider].append(r)
    for p in PROVIDERS:  # an API serving an open family serves its models too
        if p.ecosystem_of:
            own[p.id] = own[p.id] + [r for r in own[p.ecosystem_of] if r.price is not None
                                     or r.eci > 0]
    # frontier slope from all measured points (running max), ECI per month
    allr = sorted(releases + anchors, key=lambda r: r.month)
    months = np.arange(n_t)
    front = np.full(n_t, np.nan)
    best = -np.inf
    j = 0
    for t in months:
        while j < len(allr) and month_index(allr[j].month) <= t:
            best = max(best, allr[j].eci)
            j += 1
        front[t] = best if np.isfinite(best) else np.nan
    ok = np.isfinite(front)
    slope = float(np.polyfit(months[ok], front[ok], 1)[0])

    quality = np.full((n_t, N_PROVIDERS), np.nan)
    price = np.full((n_t, N_PROVIDERS), np.nan)
    openness = np.zeros((n_t, N_PROVIDERS))
    entry = np.zeros(N_PROVIDERS, dtype=np.int64)
    backcast = np.full((n_t, N_PROVIDERS), np.nan)
    for k, p in enumerate(PROVIDERS):
        rs = sorted(own[p.id], key=lambda r: r.month)
        if not rs:
            raise DataError(f"provider {p.id!r} has no release in model_releases.csv")
        first = min(r.month for r in rs)
        start = entries.get(p.id, first)
        entry[k] = month_index(min(start, first))
        first_t = month_index(first)
        first_q = max(r.eci for r in rs if r.month == first)
        priced = [r for r in rs if r.price is not None]
        for t in range(n_t):
            if t < entry[k]:
                continue
            got = [r for r in rs if month_index(r.month) <= t]
            if got:
                quality[t, k] = max(r.eci for r in got)
            else:  # entered the market before its first measured release: back-cast
                backcast[t, k] = first_q - slope * (first_t - t)
            pr = [r.price for r in priced if month_index(r.month) <= t] or \
                 [r.price for r in priced[:1]]
            if pr:
                price[t, k] = float(np.median(pr))
            if p.access == "open_weight":
                lic = [r for r in got if r.openness is not None]
                # before its first licensed release: the most restrictive licence it ever used
                openness[t, k] = lic[-1].openness if lic else \
                    min(r.openness for r in rs if r.openness is not None)
    # a back-cast quality is capped by the weakest measured provider of the month: an unmeasured
    # model is assumed no better than any measured model then on the market
    for t in range(n_t):
        need = ~np.isnan(backcast[t])
        if need.any():
            measured_t = quality[t][~np.isnan(quality[t])]
            cap = measured_t.min() if measured_t.size else np.inf
            quality[t, need] = np.minimum(backcast[t, need], cap)
    # providers with no priced release: median of (bloc, access) group, else of access mode
    for k, p in enumerate(PROVIDERS):
        if np.isnan(price[:, k]).all():
            for group in (
                [i for i, q in enumerate(PROVIDERS) if q.bloc == p.bloc and q.access == p.access],
                [i for i, q in enumerate(PROVIDERS) if q.access == p.access],
            ):
                cols = price[:, [i for i in group if not np.isnan(price[:, i]).all()]]
                if cols.size:
                    fill = np.full(n_t, np.nan)
                    for t in range(n_t):
                        row = cols[t][~np.isnan(cols[t])]
                        if row.size:
                            fill[t] = np.median(row)
                    # before any member is priced, use the group's first price
                    firsts = fill[~np.isnan(fill)]
                    fill = np.where(np.isnan(fill), firsts[0], fill)
                    price[:, k] = fill
                    break
        else:
            col = price[:, k]
            first_valid = col[~np.isnan(col)][0]
            price[:, k] = np.where(np.isnan(col), first_valid, col)
    return MeasuredPaths(quality, price, openness, entry, slope, tuple(releases),
                         ~np.isnan(backcast))


@dataclass(frozen=True)
class Paths:
    """Monthly provider paths over a whole run (T, P)."""

    quality: np.ndarray
    gap: np.ndarray  # frontier minus quality, ECI points
    price: np.ndarray  # blended USD / Mtok, API list price or open-weight hosting price
    openness: np.ndarray
    released: np.ndarray  # bool
    security: np.ndarray  # (P,)


def trajectories(measured: MeasuredPaths, n_months: int, start: date, levers,
                 assumptions) -> Paths:
    """Extend the measured paths with the scenario's levers.

    After 2025-12 the frontier keeps its measured slope (times the ``frontier_growth``
    assumption); each
    provider's gap to the frontier decays at ``gap_convergence`` per year, scaled for US open
    weights by ``us_open_investment`` (0 freezes them) and for Chinese providers by
    ``1 - export_controls``; export controls also add up to ``export_control_gap`` ECI points.
    ``meta_open_weights = False`` freezes Llama. Providers never lose quality.
    API prices fall by ``api_price_decline`` a year, open-weight hosting by
    ``distillation_efficiency`` a year. Chinese licence openness is multiplied by
    ``cn_licence_openness`` from ``cn_licence_change``.
    """
    offset = month_index(start)
    t_data = measured.quality.shape[0]
    quality = np.full((n_months, N_PROVIDERS), np.nan)
    price = np.zeros((n_months, N_PROVIDERS))
    openness = np.zeros((n_months, N_PROVIDERS))
    last = t_data - 1
    q_last = measured.quality[last]
    front_last = np.nanmax(q_last)
    gap_last = front_last - q_last
    slope = measured.frontier_slope * assumptions.frontier_growth
    conv = np.full(N_PROVIDERS, levers.gap_convergence)
    conv[US_OPEN] *= levers.us_open_investment
    conv[CN] *= 1.0 - levers.export_controls
    frozen = np.zeros(N_PROVIDERS, dtype=bool)
    if levers.us_open_investment == 0:
        frozen |= US_OPEN
    if not levers.meta_open_weights:
        frozen[INDEX["llama"]] = True
    for i in range(n_months):
        t = i + offset
        if t <= last:
            tt = max(t, 0)
            quality[i] = measured.quality[tt] - assumptions.unmeasured_gap * measured.backcast[tt]
            price[i] = measured.price[max(t, 0)]
            openness[i] = measured.openness[max(t, 0)]
            continue
        years = (t - last) / 12.0
        front = front_last + slope * (t - last)
        gap = gap_last * np.exp(-conv * years)
        gap[CN] += (levers.export_controls * assumptions.export_control_gap
                    * (1 - np.exp(-years / 2)))
        q = front - gap
        q[frozen] = q_last[frozen]
        prev = quality[i - 1] if i > 0 else q_last
        quality[i] = np.fmax(q, prev)
        decline = np.where(IS_OPEN, levers.distillation_efficiency, levers.api_price_decline)
        price[i] = measured.price[last] * (1 - decline) ** years
        openness[i] = measured.openness[last]
    change = month_index(levers.cn_licence_change) - offset
    openness[max(change, 0):, CN & IS_OPEN] *= levers.cn_licence_openness
    released = (np.arange(n_months)[:, None] + offset) >= measured.entry[None, :]
    quality = np.where(released, quality, np.nan)
    frontier = np.nanmax(np.where(released, quality, -np.inf), axis=1)
    gap = np.where(released, frontier[:, None] - quality, 0.0)
    security = np.array([p.security_measured if p.security_measured is not None
                         else assumptions.security_unmeasured for p in PROVIDERS])
    return Paths(np.nan_to_num(quality), gap, price, openness, released, security)
