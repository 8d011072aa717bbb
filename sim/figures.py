"""Figures for the app: compact run summaries, ensemble statistics and Plotly figures.

The app (``sim/app.py``) draws only what this module builds, so every figure is importable and
testable without Streamlit. A run is boiled down once to a :class:`Summary` (activity by region
and provider, plus the small frames), which is what the app caches; every share, dependency and
concentration number below is computed from it with the same definitions as
:mod:`sim.outcomes` (``tests/test_app.py`` checks that they agree).

Uncertainty is shown as the 5th-95th percentile range over the ensemble members (seeds, and
posterior parameter draws when ``calibration/parameters.json`` has them). Comparisons with the
baseline are paired: member *i* of the scenario and member *i* of the baseline share their seed
and parameter draw, so the difference shows the policy, not the noise.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import polars as pl

from sim.countries import default_countries
from sim.inputs import DATA_DIR, INCOME_GROUPS
from sim.outcomes import region_matrix
from sim.providers import BLOC_OF, BLOCS, IS_OPEN, N_PROVIDERS, PROVIDER_IDS

GEO_DIR = Path(__file__).resolve().parent / "geo"
BAND = (5, 95)  # percentiles of the ensemble drawn as bands

BLOC_NAMES = {"US": "United States", "CN": "China", "EU": "European Union", "OTHER": "Other",
              "NONE": "No AI yet"}
BLOC_COLOURS = {"US": "#2f6db5", "CN": "#c9302c", "EU": "#e0a020", "OTHER": "#7f7f7f",
                "NONE": "#d9d9d9"}
# (bloc, access) stacking order, bottom to top; "open_weight" drawn in a lighter tint.
CATEGORIES = (("US", "api"), ("US", "open_weight"), ("EU", "api"), ("EU", "open_weight"),
              ("CN", "open_weight"), ("CN", "api"), ("NONE", "none"))
CATEGORY_COLOURS = {("US", "api"): "#1f4e8c", ("US", "open_weight"): "#7fa7dc",
                    ("EU", "api"): "#b07a00", ("EU", "open_weight"): "#f0c75e",
                    ("CN", "open_weight"): "#ee8f8b", ("CN", "api"): "#9e1f1b",
                    ("NONE", "none"): "#e6e6e6"}
ACCESS_NAMES = {"api": "API", "open_weight": "open weights", "none": ""}
PLOT_BLOCS = ("US", "CN", "EU")  # blocs that have providers (OTHER has none)


def category_label(cat: tuple[str, str]) -> str:
    """Legend label of a (bloc, access) category."""
    bloc, access = cat
    return "No AI yet" if bloc == "NONE" else f"{bloc} · {ACCESS_NAMES[access]}"


def _hex_rgba(colour: str, alpha: float) -> str:
    c = colour.lstrip("#")
    r, g, b = (int(c[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


# --------------------------------------------------------------------------------------------
# Run summaries


@dataclass
class Summary:
    """What the app keeps of one run (small enough to cache and pickle).

    ``usage[t, r, p]`` is the activity (firm weight) in region ``r`` using provider ``p`` (last
    column: no AI yet) in month ``t``; regions are the ISO3 countries, then ``WLD`` and the income
    groups, exactly as in ``Result.adoption``.
    """

    dates: list[date]
    regions: list[str]
    n_countries: int
    usage: np.ndarray  # (T, R, P + 1)
    observables: dict[str, tuple[tuple[str, ...], np.ndarray]]  # metric -> (groups, (T, k))
    new_derivatives: np.ndarray  # (T, P)
    disrupted: np.ndarray  # (T, R, 2): [served again, total disrupted] activity by region
    policies: pl.DataFrame
    manifest: dict
    region_index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        self.region_index = {r: i for i, r in enumerate(self.regions)}

    def r(self, region: str) -> int:
        """Row of a region."""
        return self.region_index[region]


@lru_cache(maxsize=1)
def _regions() -> tuple[list[str], np.ndarray]:
    tab = default_countries()
    return region_matrix(tab.iso3, tab.income)


def _by_region(rmat: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(T, C, K) country values summed into (T, R, K) regions; (T, K) world-only kept as is."""
    if values.ndim == 2:  # an older record without countries: world only
        out = np.zeros((values.shape[0], rmat.shape[0], values.shape[1]))
        out[:, rmat.shape[1]] = values
        return out
    return np.matmul(rmat, values)


def summarise(result) -> Summary:
    """Boil a :class:`~sim.result.Result` down to a :class:`Summary` (no large frames built)."""
    rec = result.record
    regions, rmat = _regions()
    usage = np.matmul(rmat, rec["usage"])
    obs: dict[str, tuple[tuple[str, ...], np.ndarray]] = {}
    frame = result.observables
    n_t = len(result.dates)
    for metric in frame["metric"].unique(maintain_order=True).to_list():
        sub = frame.filter(pl.col("metric") == metric)
        groups = tuple(sub["group"].unique(maintain_order=True).to_list())
        obs[metric] = (groups, sub["value"].to_numpy().reshape(n_t, len(groups)))
    return Summary(
        dates=list(result.dates), regions=list(regions), n_countries=default_countries().n,
        usage=usage, observables=obs,
        new_derivatives=np.asarray(rec["new_derivatives"], dtype=np.float64),
        disrupted=_by_region(rmat, np.asarray(rec["disrupted"], dtype=np.float64)),
        policies=result.policies, manifest=result.manifest)


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return np.divide(a, b, out=np.zeros(np.broadcast_shapes(a.shape, b.shape)), where=b > 0)


_CAT_MASKS = {cat: (np.array([False] * N_PROVIDERS + [True]) if cat[0] == "NONE" else
                    np.append((BLOC_OF == BLOCS.index(cat[0]))
                              & (IS_OPEN == (cat[1] == "open_weight")), False))
              for cat in CATEGORIES}
_BLOC_MASKS = [BLOC_OF == b for b in range(len(BLOCS))]
_INFRA_MASKS = [(BLOC_OF == b) & ~IS_OPEN for b in range(len(BLOCS))]
_MODEL_MASKS = [(BLOC_OF == b) & IS_OPEN for b in range(len(BLOCS))]


def _usage(x) -> np.ndarray:
    return np.asarray(x.usage if isinstance(x, Summary) else x, dtype=np.float64)


def category_shares(x) -> np.ndarray:
    """Share of all activity by (bloc, access) category, in :data:`CATEGORIES` order.

    ``x`` is a :class:`Summary` or any usage array ``(..., P + 1)``; the result is ``(..., 7)``.
    """
    u = _usage(x)
    tot = u.sum(axis=-1)
    return np.stack([_div(u[..., m].sum(axis=-1), tot) for m in _CAT_MASKS.values()], axis=-1)


def bloc_shares_ai(x) -> np.ndarray:
    """Share of AI use (activity that uses AI) by bloc, ``(..., 4)`` in :data:`BLOCS` order."""
    u = _usage(x)[..., :N_PROVIDERS]
    tot = u.sum(axis=-1)
    return np.stack([_div(u[..., m].sum(axis=-1), tot) for m in _BLOC_MASKS], axis=-1)


def dependency(x) -> tuple[np.ndarray, np.ndarray]:
    """Infrastructure (APIs) and model (open weights) dependency, each ``(..., 4)`` by bloc.

    Same definition as :func:`sim.outcomes.dependency`: shares of AI usage.
    """
    u = _usage(x)[..., :N_PROVIDERS]
    tot = u.sum(axis=-1)
    infra = np.stack([_div(u[..., m].sum(axis=-1), tot) for m in _INFRA_MASKS], axis=-1)
    model = np.stack([_div(u[..., m].sum(axis=-1), tot) for m in _MODEL_MASKS], axis=-1)
    return infra, model


def hhi(x) -> np.ndarray:
    """Herfindahl-Hirschman index of providers' shares of AI use (``hhi_providers``)."""
    u = _usage(x)[..., :N_PROVIDERS]
    share = _div(u, u.sum(axis=-1, keepdims=True))
    return (share ** 2).sum(axis=-1)


def ai_adoption(x) -> np.ndarray:
    """Share of activity that uses AI (``ai_adoption``)."""
    u = _usage(x)
    return _div(u[..., :N_PROVIDERS].sum(axis=-1), u.sum(axis=-1))


def majority_countries(s: Summary, t: int | slice = slice(None)) -> np.ndarray:
    """Number of countries where a bloc has more than half of AI use: ``(T, 4)`` (or ``(4,)``).

    Same definition as ``majority_countries_<bloc>`` in :func:`sim.outcomes.kpis`.
    """
    cu = np.asarray(s.usage[t, :s.n_countries, :N_PROVIDERS], dtype=np.float64)
    bloc_use = np.stack([cu[..., m].sum(axis=-1) for m in _BLOC_MASKS], axis=-1)
    has = bloc_use.sum(axis=-1) > 0
    lead = np.argmax(bloc_use, axis=-1)
    share_lead = _div(bloc_use.max(axis=-1), bloc_use.sum(axis=-1))
    return np.stack([((lead == b) & has & (share_lead > 0.5)).sum(axis=-1)
                     for b in range(len(BLOCS))], axis=-1).astype(float)


def provider_share_ai(s: Summary, providers: tuple[str, ...]) -> np.ndarray:
    """(T, R) share of AI use on the listed providers."""
    u = _usage(s)[..., :N_PROVIDERS]
    idx = [PROVIDER_IDS.index(p) for p in providers]
    return _div(u[..., idx].sum(axis=-1), u.sum(axis=-1))


def recovery(s: Summary, region: str = "WLD") -> dict | None:
    """The run's own cut-off tallies in a region (same definitions as ``Result.cutoff``).

    Returns None when no firm in the region lost its provider to a cut-off. Otherwise: the
    first month of disruption anywhere (``start``, index ``t0``), ``disrupted_share`` (activity
    cut off as a share of the region's AI use the month before), ``months_to_90`` (months until
    90 % of it is served again; None if never) and the ``curve`` of the share served again.
    """
    r = s.r(region)
    served, total = s.disrupted[:, r, 0], s.disrupted[:, r, 1]
    any_hit = np.flatnonzero(s.disrupted[:, :, 1].sum(axis=1) > 0)
    if not (total > 0).any() or not any_hit.size:
        return None
    t0 = int(any_hit[0])
    ai = s.usage[:, r, :N_PROVIDERS].sum(axis=1)
    base = ai[max(t0 - 1, 0)]
    curve = _div(served, total)
    ok = np.flatnonzero((curve[t0:] >= 0.9) & (total[t0:] > 0))
    first = total[int(np.argmax(total > 0))]
    return {"start": s.dates[t0], "t0": t0,
            "disrupted_share": float(first / base) if base > 0 else float("nan"),
            "months_to_90": int(ok[0]) if ok.size else None, "curve": curve}


# --------------------------------------------------------------------------------------------
# Ensembles


def stack(members: list[Summary], fn) -> np.ndarray:
    """``fn`` applied to every member, stacked on a new first axis."""
    return np.stack([fn(m) for m in members])


def band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and the :data:`BAND` percentiles over the first axis."""
    lo, hi = np.percentile(values, BAND, axis=0)
    return values.mean(axis=0), lo, hi


@dataclass(frozen=True)
class Kpi:
    """A headline number: its value, the paired change against the baseline and their range."""

    key: str
    label: str
    value: float
    delta: float
    delta_lo: float
    delta_hi: float
    kind: str  # "share" (0-1, shown in %), "count", "index"
    help: str

    def text(self) -> str:
        """The value as shown."""
        if self.kind == "share":
            return f"{100 * self.value:.1f}%"
        if self.kind == "count":
            return f"{self.value:.0f}"
        return f"{self.value:.3f}"

    def delta_text(self) -> str:
        """The change against the baseline as shown."""
        if self.kind == "share":
            return f"{100 * self.delta:+.1f} pp vs baseline"
        if self.kind == "count":
            return f"{self.delta:+.1f} vs baseline"
        return f"{self.delta:+.3f} vs baseline"

    def range_text(self) -> str:
        """The ensemble range of the change."""
        if self.kind == "share":
            return f"{100 * self.delta_lo:+.1f} to {100 * self.delta_hi:+.1f} pp"
        if self.kind == "count":
            return f"{self.delta_lo:+.1f} to {self.delta_hi:+.1f}"
        return f"{self.delta_lo:+.3f} to {self.delta_hi:+.3f}"


_US, _CN = BLOCS.index("US"), BLOCS.index("CN")
KPI_SPECS = (
    ("share_us", "US share of AI use", "share",
     "World, activity-weighted share of AI use on US providers (APIs and open weights)",
     lambda s, t: bloc_shares_ai(s.usage[t, s.r("WLD")])[_US]),
    ("share_cn", "Chinese share of AI use", "share",
     "World, activity-weighted share of AI use on Chinese providers (APIs and open weights)",
     lambda s, t: bloc_shares_ai(s.usage[t, s.r("WLD")])[_CN]),
    ("infra_cn", "Use on Chinese APIs", "share",
     "Infrastructure dependency on China, world: share of AI use served by Chinese APIs "
     "(can be cut off overnight)",
     lambda s, t: dependency(s.usage[t, s.r("WLD")])[0][_CN]),
    ("majority_us", "US-majority countries", "count",
     "Countries where US providers have more than half of AI use (majority_countries_US)",
     lambda s, t: majority_countries(s, t)[_US]),
    ("majority_cn", "China-majority countries", "count",
     "Countries where Chinese providers have more than half of AI use (majority_countries_CN)",
     lambda s, t: majority_countries(s, t)[_CN]),
    ("hhi", "Concentration (HHI)", "index",
     "World Herfindahl-Hirschman index of providers' shares of AI use (hhi_providers): "
     "1 = one provider serves everyone",
     lambda s, t: hhi(s.usage[t, s.r("WLD")])),
)


def kpis(members: list[Summary], baseline: list[Summary], t: int) -> list[Kpi]:
    """Headline numbers at month ``t``: ensemble mean and paired change against the baseline."""
    out = []
    n = min(len(members), len(baseline))
    for key, label, kind, help_, fn in KPI_SPECS:
        v = np.array([fn(m, t) for m in members])
        b = np.array([fn(m, t) for m in baseline[:n]])
        d = v[:n] - b
        lo, hi = np.percentile(d, BAND) if n else (np.nan, np.nan)
        out.append(Kpi(key, label, float(v.mean()), float(d.mean()), float(lo), float(hi),
                       kind, help_))
    return out


# --------------------------------------------------------------------------------------------
# Figures


def _layout(fig: go.Figure, title: str, ytitle: str = "", height: int = 380,
            percent: bool = True) -> go.Figure:
    fig.update_layout(title=dict(text=title, x=0, xanchor="left"), height=height,
                      margin=dict(l=10, r=10, t=50, b=10), hovermode="x unified",
                      legend=dict(orientation="h", yanchor="top", y=-0.12, x=0))
    fig.update_yaxes(title_text=ytitle)
    if percent:
        fig.update_yaxes(tickformat=".0%", rangemode="tozero")
    return fig


def _band_traces(fig, x, mean, lo, hi, colour, name, group, dash="solid", width=2.5,
                 show_band=True, **kw):
    if show_band:
        fig.add_trace(go.Scatter(x=x, y=hi, mode="lines", line=dict(width=0), hoverinfo="skip",
                                 showlegend=False, legendgroup=group, **kw))
        fig.add_trace(go.Scatter(x=x, y=lo, mode="lines", line=dict(width=0), fill="tonexty",
                                 fillcolor=_hex_rgba(colour, 0.18), hoverinfo="skip",
                                 showlegend=False, legendgroup=group, **kw))
    fig.add_trace(go.Scatter(x=x, y=mean, mode="lines", name=name, legendgroup=group,
                             line=dict(color=colour, width=width, dash=dash),
                             hovertemplate="%{y:.1%}", **kw))


def shares_figure(members: list[Summary], baseline: list[Summary], region: str,
                  region_name: str) -> go.Figure:
    """Stacked shares of activity by bloc and access mode, with the baseline's boundaries."""
    s0 = members[0]
    r = s0.r(region)
    x = s0.dates
    cat = stack(members, lambda m: category_shares(m.usage[:, r])).mean(axis=0)
    fig = go.Figure()
    for k, c in enumerate(CATEGORIES):
        fig.add_trace(go.Scatter(
            x=x, y=cat[:, k], name=category_label(c), mode="lines", stackgroup="scenario",
            line=dict(width=0.5, color=CATEGORY_COLOURS[c]), fillcolor=CATEGORY_COLOURS[c],
            hovertemplate="%{y:.1%}", legendgroup=c[0]))
    if baseline:
        bcat = stack(baseline, lambda m: category_shares(m.usage[:, r])).mean(axis=0)
        cum = np.cumsum(bcat, axis=1)
        for k, c in enumerate(CATEGORIES[:-1]):
            fig.add_trace(go.Scatter(
                x=x, y=cum[:, k], mode="lines", name="baseline boundaries",
                legendgroup="baseline", showlegend=k == 0,
                line=dict(color="#222222", width=1.2, dash="dot"),
                hovertemplate=f"baseline up to {category_label(c)}: %{{y:.1%}}<extra></extra>"))
    fig.update_yaxes(range=[0, 1])
    return _layout(fig, f"{region_name}: activity by bloc and access mode", "share of activity",
                   height=420)


def bloc_compare_figure(members: list[Summary], baseline: list[Summary], region: str,
                        region_name: str) -> go.Figure:
    """US, Chinese and EU shares of AI use: scenario vs baseline, with ensemble bands."""
    s0 = members[0]
    r = s0.r(region)
    x = s0.dates
    sc = stack(members, lambda m: bloc_shares_ai(m.usage[:, r]))
    fig = go.Figure()
    if baseline:
        bs = stack(baseline, lambda m: bloc_shares_ai(m.usage[:, r]))
    for bloc in PLOT_BLOCS:
        b = BLOCS.index(bloc)
        colour = BLOC_COLOURS[bloc]
        if baseline:
            _band_traces(fig, x, *band(bs[:, :, b]), colour, f"{bloc} baseline", bloc,
                         dash="dot", width=1.5, show_band=len(baseline) > 1)
        _band_traces(fig, x, *band(sc[:, :, b]), colour, f"{bloc} scenario", bloc,
                     show_band=len(members) > 1)
    return _layout(fig, f"{region_name}: share of AI use, scenario vs baseline", "share of AI use",
                   height=420)


def dependency_bars_figure(members: list[Summary], baseline: list[Summary], t: int,
                           regions: list[tuple[str, str]]) -> go.Figure:
    """Infra vs model dependency per region and bloc at month ``t``, scenario and baseline."""
    runs = {"scenario": members, **({"baseline": baseline} if baseline else {})}
    means = {k: tuple(stack(v, lambda m, i=i: dependency(m.usage[t])[i]).mean(axis=0)
                      for i in (0, 1)) for k, v in runs.items()}
    s0 = members[0]
    cells = [(code, name, run) for code, name in regions for run in runs]
    x = [[name for _, name, _ in cells], [run for _, _, run in cells]]
    fig = go.Figure()
    for bloc in PLOT_BLOCS:
        b = BLOCS.index(bloc)
        for i, (kind, access) in enumerate((("API (infrastructure)", "api"),
                                            ("open weights (model)", "open_weight"))):
            y = [means[run][i][s0.r(code), b] for code, _, run in cells]
            fig.add_trace(go.Bar(x=x, y=y, name=f"{bloc} · {kind}",
                                 marker_color=CATEGORY_COLOURS[(bloc, access)],
                                 hovertemplate="%{y:.1%}"))
    fig.update_layout(barmode="stack")
    fig.update_yaxes(range=[0, 1])
    when = s0.dates[t].strftime("%Y-%m")
    fig.update_layout(legend=dict(y=-0.22), margin=dict(b=40))
    return _layout(fig, f"Dependency in {when}: APIs (infrastructure) and open weights (model)",
                   "share of AI use", height=420)


def dependency_lines_figure(members: list[Summary], baseline: list[Summary], region: str,
                            region_name: str) -> go.Figure:
    """Infra and model dependency on the US and China over time, with bands and baseline."""
    s0 = members[0]
    r = s0.r(region)
    x = s0.dates
    fig = go.Figure()
    for kind, idx, dash in (("infra", 0, "solid"), ("model", 1, "dash")):
        sc = stack(members, lambda m, i=idx: dependency(m.usage[:, r])[i])
        bs = stack(baseline, lambda m, i=idx: dependency(m.usage[:, r])[i]) if baseline else None
        for bloc in ("US", "CN"):
            b = BLOCS.index(bloc)
            colour = BLOC_COLOURS[bloc]
            label = f"{bloc} {kind}"
            _band_traces(fig, x, *band(sc[:, :, b]), colour, label, label, dash=dash,
                         show_band=len(members) > 1)
            if bs is not None:
                fig.add_trace(go.Scatter(x=x, y=bs[:, :, b].mean(axis=0), mode="lines",
                                         name=f"{label} baseline", legendgroup=label,
                                         line=dict(color=colour, width=1, dash="dot"),
                                         hovertemplate="%{y:.1%}"))
    return _layout(fig, f"{region_name}: dependency on the US and China over time",
                   "share of AI use")


def concentration_figure(members: list[Summary], baseline: list[Summary], region: str,
                         region_name: str) -> go.Figure:
    """Provider concentration (HHI) over time, scenario vs baseline, with bands."""
    s0 = members[0]
    r = s0.r(region)
    x = s0.dates
    fig = go.Figure()
    if baseline:
        _band_traces(fig, x, *band(stack(baseline, lambda m: hhi(m.usage[:, r]))), "#555555",
                     "baseline", "baseline", dash="dot", width=1.5, show_band=len(baseline) > 1)
    _band_traces(fig, x, *band(stack(members, lambda m: hhi(m.usage[:, r]))), "#6a3d9a", "scenario",
                 "scenario", show_band=len(members) > 1)
    fig.update_traces(hovertemplate="%{y:.3f}")
    return _layout(fig, f"{region_name}: provider concentration (HHI)", "HHI (0-1)", height=320,
                   percent=False)


def majority_figure(members: list[Summary], baseline: list[Summary]) -> go.Figure:
    """Number of countries where each bloc holds the majority of AI use."""
    x = members[0].dates
    fig = go.Figure()
    sc = stack(members, majority_countries)
    bs = stack(baseline, majority_countries) if baseline else None
    for bloc in PLOT_BLOCS:
        b = BLOCS.index(bloc)
        colour = BLOC_COLOURS[bloc]
        _band_traces(fig, x, *band(sc[:, :, b]), colour, f"{bloc} scenario", bloc,
                     show_band=len(members) > 1)
        if bs is not None:
            fig.add_trace(go.Scatter(x=x, y=bs[:, :, b].mean(axis=0), mode="lines",
                                     name=f"{bloc} baseline", legendgroup=bloc,
                                     line=dict(color=colour, width=1, dash="dot")))
    fig.update_traces(hovertemplate="%{y:.1f}")
    return _layout(fig, "Countries where a bloc has the majority of AI use", "countries",
                   height=320, percent=False)


@lru_cache(maxsize=1)
def world_geojson() -> dict:
    """Offline country shapes (Natural Earth 1:110m; ``feature.id`` = ISO3)."""
    return json.loads((GEO_DIR / "countries_110m.geojson").read_text())


@lru_cache(maxsize=1)
def shaped_iso3() -> frozenset[str]:
    """ISO3 codes that have a shape on the map."""
    return frozenset(f["id"] for f in world_geojson()["features"])


def _geo(fig: go.Figure) -> None:
    fig.update_geos(visible=False, showframe=False, projection_type="natural earth",
                    lataxis_range=[-57, 84], lonaxis_range=[-170, 190])
    fig.update_layout(margin=dict(l=0, r=0, t=40, b=0), height=430,
                      legend=dict(orientation="h", yanchor="top", y=0.02, x=0))


def country_table(members: list[Summary], t: int) -> pl.DataFrame:
    """Per-country numbers at month ``t`` (ensemble means) for the maps and their table."""
    tab = default_countries()
    s0 = members[0]
    c = s0.n_countries
    shares = stack(members, lambda m: bloc_shares_ai(m.usage[t, :c])).mean(axis=0)
    infra = stack(members, lambda m: dependency(m.usage[t, :c])[0]).mean(axis=0)
    model = stack(members, lambda m: dependency(m.usage[t, :c])[1]).mean(axis=0)
    adopt = stack(members, lambda m: ai_adoption(m.usage[t, :c])).mean(axis=0)
    lead = np.where(adopt > 0, np.argmax(shares, axis=1), -1)
    return pl.DataFrame({
        "iso3": list(tab.iso3), "country": list(tab.name),
        "income_group": [INCOME_GROUPS[i] if i >= 0 else "" for i in tab.income],
        "leading_bloc": [BLOCS[i] if i >= 0 else "NONE" for i in lead],
        "ai_adoption": adopt,
        **{f"share_{b}": shares[:, k] for k, b in enumerate(BLOCS) if b in PLOT_BLOCS},
        **{f"infra_{b}": infra[:, k] for k, b in enumerate(BLOCS) if b in PLOT_BLOCS},
        **{f"model_{b}": model[:, k] for k, b in enumerate(BLOCS) if b in PLOT_BLOCS},
        "on_map": [i in shaped_iso3() for i in tab.iso3],
    })


def _hover(df: pl.DataFrame) -> list[str]:
    return [f"<b>{r['country']}</b> ({r['iso3']})<br>US {r['share_US']:.0%} · "
            f"CN {r['share_CN']:.0%} · EU {r['share_EU']:.0%} of AI use<br>"
            f"APIs: US {r['infra_US']:.0%}, CN {r['infra_CN']:.0%} · open weights: "
            f"US {r['model_US']:.0%}, CN {r['model_CN']:.0%}"
            for r in df.iter_rows(named=True)]


def leading_bloc_map(table: pl.DataFrame, when: date) -> go.Figure:
    """World map of the bloc with the largest share of AI use in each country."""
    df = table.filter(pl.col("on_map"))
    cats = (*PLOT_BLOCS, "NONE")
    k = len(cats)
    scale = []
    for i, bloc in enumerate(cats):
        scale += [[i / k, BLOC_COLOURS[bloc]], [(i + 1) / k, BLOC_COLOURS[bloc]]]
    z = [cats.index(b) if b in cats else k - 1 for b in df["leading_bloc"].to_list()]
    fig = go.Figure(go.Choropleth(
        featureidkey="id", locations=df["iso3"].to_list(), z=z, zmin=-0.5, zmax=k - 0.5,
        colorscale=scale, showscale=False, marker_line_color="white", marker_line_width=0.4,
        text=_hover(df), hovertemplate="%{text}<extra></extra>", name="leading bloc"))
    fig.update_traces(geojson=world_geojson())  # set after construction: much faster
    counts = df["leading_bloc"].value_counts()
    n_of = dict(zip(counts["leading_bloc"].to_list(), counts["count"].to_list()))
    for bloc in cats:  # legend entries (a choropleth has one colour scale, not a legend)
        if n_of.get(bloc):
            fig.add_trace(go.Scattergeo(lon=[None], lat=[None], mode="markers",
                                        marker=dict(size=12, symbol="square",
                                                    color=BLOC_COLOURS[bloc]),
                                        name=f"{BLOC_NAMES[bloc]} ({n_of[bloc]})"))
    _geo(fig)
    fig.update_layout(title=dict(text=f"Leading bloc of AI use, {when:%Y-%m}", x=0))
    return fig


DEPENDENCY_MEASURES = {
    "infra_CN": "on Chinese APIs (infrastructure)",
    "model_CN": "on Chinese open weights (model)",
    "total_CN": "on China (APIs + open weights)",
    "infra_US": "on US APIs (infrastructure)",
    "model_US": "on US open weights (model)",
    "total_US": "on the US (APIs + open weights)",
}


def dependency_values(table: pl.DataFrame, measure: str) -> np.ndarray:
    """Values of a :data:`DEPENDENCY_MEASURES` measure, one per row of ``table``."""
    kind, bloc = measure.split("_")
    if kind == "total":
        return (table[f"infra_{bloc}"] + table[f"model_{bloc}"]).to_numpy()
    return table[measure].to_numpy()


def dependency_map(table: pl.DataFrame, measure: str, when: date,
                   baseline_table: pl.DataFrame | None = None) -> go.Figure:
    """World map of one dependency measure per country (or its change against the baseline)."""
    gj = world_geojson()
    mask = table["on_map"].to_numpy()
    vals = dependency_values(table, measure)
    df = table.filter(pl.col("on_map"))
    label = DEPENDENCY_MEASURES[measure]
    if baseline_table is not None:
        vals = vals - dependency_values(baseline_table, measure)
        lim = max(float(np.abs(vals[mask]).max()), 0.01)
        scale, zmin, zmax = "RdBu_r", -lim, lim
        title = f"Change in dependency {label} vs baseline, {when:%Y-%m} (percentage points)"
        ctitle = "change"
    else:
        scale, zmin, zmax = "Reds" if measure.endswith("CN") else "Blues", 0.0, 1.0
        title = f"Dependency {label}, {when:%Y-%m} (share of AI use)"
        ctitle = "share"
    fig = go.Figure(go.Choropleth(
        featureidkey="id", locations=df["iso3"].to_list(), z=vals[mask],
        zmin=zmin, zmax=zmax, colorscale=scale, marker_line_color="white",
        marker_line_width=0.4, text=_hover(df),
        colorbar=dict(title=dict(text=ctitle), tickformat=".0%", len=0.7, thickness=12),
        hovertemplate="%{text}<br>value: %{z:.1%}<extra></extra>"))
    fig.update_traces(geojson=gj)
    _geo(fig)
    fig.update_layout(title=dict(text=title, x=0))
    return fig


DRIVER_COMPONENTS = ("cost", "performance", "trust", "ecosystem", "peers", "licence", "lock_in")


def drivers_figure(df: pl.DataFrame, baseline: pl.DataFrame | None, country_name: str,
                   when: date) -> go.Figure:
    """Driver decomposition: each term's contribution to each bloc's utility, and the gap.

    ``df`` (and ``baseline``) have columns ``component``, ``bloc``, ``value`` as returned by
    ``sim.drivers.decompose``; their ``total`` and ``choice_share`` rows are left out of the bars.
    Left: the scenario's contribution by bloc. Right: the US-minus-China gap by term (positive
    pulls firms toward the US), scenario against baseline.
    """
    from plotly.subplots import make_subplots

    def values(frame):
        frame = frame.filter(~pl.col("component").is_in(["total", "choice_share"]))
        return {(r["component"], r["bloc"]): r["value"] for r in frame.iter_rows(named=True)}

    value = values(df)
    present = {c for c, _ in value}
    comps = [c for c in DRIVER_COMPONENTS if c in present] + \
        sorted(present - set(DRIVER_COMPONENTS))
    blocs = [b for b in (*PLOT_BLOCS, "OTHER") if any(k[1] == b for k in value)]
    has_gap = "US" in blocs and "CN" in blocs
    fig = make_subplots(rows=1, cols=2 if has_gap else 1, horizontal_spacing=0.14,
                        subplot_titles=["Contribution by bloc (scenario)"]
                        + (["US minus China: scenario vs baseline"] if has_gap else []))
    for bloc in blocs:
        fig.add_trace(go.Bar(y=comps, x=[value.get((c, bloc), 0.0) for c in comps],
                             orientation="h", name=BLOC_NAMES.get(bloc, bloc),
                             marker_color=BLOC_COLOURS.get(bloc, "#999999"),
                             hovertemplate="%{y}: %{x:.3f}"), row=1, col=1)
    if has_gap:
        runs = [("scenario", value, 1.0)]
        if baseline is not None:
            runs.append(("baseline", values(baseline), 0.35))
        for name, v, alpha in runs:
            gap = [v.get((c, "US"), 0.0) - v.get((c, "CN"), 0.0) for c in comps]
            fig.add_trace(go.Bar(
                y=comps, x=gap, orientation="h", name=f"gap, {name}",
                marker_color=[_hex_rgba(BLOC_COLOURS["US"] if g >= 0 else BLOC_COLOURS["CN"],
                                        alpha) for g in gap],
                marker_line=dict(color="#333333", width=0.6),
                hovertemplate=f"{name} %{{y}}: %{{x:+.3f}}<extra></extra>"), row=1, col=2)
    fig.update_layout(barmode="group", height=430, margin=dict(l=10, r=10, t=80, b=10),
                      title=dict(text=f"Why: what drives firms' choices in {country_name}, "
                                 f"{when:%Y-%m} (utility units)", x=0),
                      legend=dict(orientation="h", yanchor="top", y=-0.1, x=0))
    fig.update_yaxes(autorange="reversed")
    return fig


def recovery_figure(x: list, curves: np.ndarray, title: str, xtitle: str = "",
                    baseline: np.ndarray | None = None) -> go.Figure:
    """Recovery after a cut-off: the share of the disrupted usage that is served again.

    ``curves`` is (runs, months) from the cut-off on; ``baseline`` the same for the baseline
    under the same cut-off (dotted).
    """
    curves = np.atleast_2d(curves)
    fig = go.Figure()
    if baseline is not None:
        fig.add_trace(go.Scatter(x=x, y=np.atleast_2d(baseline).mean(axis=0), mode="lines",
                                 name="baseline, same cut-off",
                                 line=dict(color="#555555", width=1.5, dash="dot"),
                                 hovertemplate="%{y:.1%}"))
    _band_traces(fig, x, *band(curves), "#2ca02c", "scenario", "scenario",
                 show_band=curves.shape[0] > 1)
    fig.add_hline(y=0.9, line_dash="dot", line_color="#555555",
                  annotation_text="90% served again", annotation_position="bottom right")
    fig.update_xaxes(title_text=xtitle)
    fig = _layout(fig, title, "share of disrupted usage served again", height=360)
    fig.update_yaxes(range=[0, 1.02])
    return fig


# --------------------------------------------------------------------------------------------
# Calibration view: the model against the real data points


@dataclass(frozen=True)
class Target:
    """One kind of data row and the model series it is compared with."""

    file: str
    metric: str
    subject: str  # region_or_family
    panel: str
    series: str  # name of the model series in the panel


PANELS = {
    "hf_new_derivatives": "New Hugging Face derivatives by base-model origin",
    "hf_downloads": "Hugging Face downloads of open models by origin",
    "api_tokens_bloc": "Hosted-API tokens by origin (OpenRouter-like)",
    "api_tokens_access": "Hosted tokens: open-weight vs closed models",
    "deepseek": "DeepSeek's share of AI use by country",
}
# Which data rows are comparable with which model series. Rows not listed here (counts,
# cumulative downloads, shares of *all* Hugging Face models, population-based adoption, peaks)
# have a different unit or denominator and are listed in the view as "not compared".
TARGETS = (
    Target("hf_derivatives_share.csv", "share_of_new_finetuned_models_built_on_base_of_origin",
           "China", "hf_new_derivatives", "CN"),
    Target("hf_derivatives_share.csv", "share_of_new_derivative_models_by_base_family", "Qwen",
           "hf_new_derivatives", "Qwen family"),
    Target("hf_downloads_share.csv", "share_of_downloads_tracked_open_models", "United States",
           "hf_downloads", "US"),
    Target("hf_downloads_share.csv", "share_of_downloads_tracked_open_models", "China",
           "hf_downloads", "CN"),
    Target("hf_downloads_share.csv", "share_of_new_downloads_tracked_open_models", "China",
           "hf_downloads", "CN"),
    Target("hf_downloads_share.csv", "share_of_new_downloads_tracked_open_models",
           "United States", "hf_downloads", "US"),
    Target("hf_downloads_share.csv", "share_of_downloads_tracked_open_models_low", "Europe",
           "hf_downloads", "EU"),
    Target("hf_downloads_share.csv", "share_of_downloads_tracked_open_models_high", "Europe",
           "hf_downloads", "EU"),
    Target("api_token_share.csv", "share_of_weekly_tokens_openrouter",
           "Chinese open-source models", "api_tokens_bloc", "CN"),
    Target("api_token_share.csv", "average_share_of_weekly_tokens_openrouter",
           "Chinese open-source models", "api_tokens_bloc", "CN"),
    Target("api_token_share.csv", "share_of_tokens_openrouter", "Open-weight models (all origins)",
           "api_tokens_access", "open"),
    Target("api_token_share.csv", "share_of_tokens_openrouter", "Closed/proprietary models",
           "api_tokens_access", "closed"),
    Target("api_token_share.csv", "share_of_enterprise_llm_usage", "Open-source models",
           "api_tokens_access", "open"),
    Target("api_token_share.csv", "share_of_enterprise_llm_usage", "Closed-source models",
           "api_tokens_access", "closed"),
    Target("country_adoption.csv", "deepseek_share_of_genai_usage", "China", "deepseek", "CHN"),
    Target("country_adoption.csv", "deepseek_share_of_genai_usage", "Belarus", "deepseek",
           "BLR"),
    Target("country_adoption.csv", "deepseek_share_of_genai_usage", "Cuba", "deepseek", "CUB"),
    Target("country_adoption.csv", "deepseek_share_of_genai_usage", "Russia", "deepseek", "RUS"),
)
CALIBRATION_FILES = ("hf_derivatives_share.csv", "hf_downloads_share.csv",
                     "api_token_share.csv", "country_adoption.csv")
SERIES_COLOURS = {"CN": BLOC_COLOURS["CN"], "US": BLOC_COLOURS["US"], "EU": BLOC_COLOURS["EU"],
                  "Qwen family": "#ff7f0e", "open": "#2ca02c", "closed": "#555555",
                  "CHN": "#9e1f1b", "BLR": "#1f77b4", "CUB": "#2ca02c", "RUS": "#9467bd"}


def _data_date(raw: str) -> tuple[date, bool]:
    """A data row's date as a month; year-only dates go to mid-year (flagged)."""
    parts = raw.strip().split("-")
    if len(parts) == 1:
        return date(int(parts[0]), 7, 1), True
    return date(int(parts[0]), int(parts[1]), 1), False


def calibration_points(data_dir: Path | None = None) -> pl.DataFrame:
    """Every data row of the calibration files, with its panel and series when it is compared."""
    folder = data_dir or DATA_DIR
    lookup = {(t.file, t.metric, t.subject): t for t in TARGETS}
    rows = []
    for name in CALIBRATION_FILES:
        path = folder / name
        if not path.is_file():
            continue
        with path.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                t = lookup.get((name, row["metric"], row["region_or_family"]))
                when, year_only = _data_date(row["date"])
                unit = row.get("unit", "")
                try:
                    value = float(row["value"])
                except ValueError:
                    continue
                rows.append({
                    "file": name, "date": when, "year_only": year_only,
                    "metric": row["metric"], "subject": row["region_or_family"],
                    "value": value / 100 if unit.startswith("percent") and t else value,
                    "unit": unit, "bound": "lower" if "lower bound" in unit else
                    "upper" if "upper bound" in unit else "approx" if "approx" in unit else "",
                    "compared": t is not None, "panel": t.panel if t else "",
                    "series": t.series if t else "",
                    "reliability": row.get("reliability", ""), "source": row.get("source", ""),
                    "note": row.get("note", ""), "caveat": row.get("caveat", "")})
    return pl.DataFrame(rows, schema={
        "file": pl.String, "date": pl.Date, "year_only": pl.Boolean, "metric": pl.String,
        "subject": pl.String, "value": pl.Float64, "unit": pl.String, "bound": pl.String,
        "compared": pl.Boolean, "panel": pl.String, "series": pl.String,
        "reliability": pl.String, "source": pl.String, "note": pl.String, "caveat": pl.String})


def model_series(s: Summary, panel: str) -> dict[str, np.ndarray]:
    """The model's (T,) series for a calibration panel, by series name."""
    if panel == "hf_new_derivatives":
        groups, v = s.observables["hf_new_derivatives_share"]
        nd = s.new_derivatives
        qwen = _div(nd[:, PROVIDER_IDS.index("qwen")], nd[:, IS_OPEN].sum(axis=1))
        return {"CN": v[:, groups.index("CN")], "Qwen family": qwen}
    if panel == "hf_downloads":
        groups, v = s.observables["hf_downloads_share"]
        return {b: v[:, groups.index(b)] for b in ("US", "CN", "EU")}
    if panel == "api_tokens_bloc":
        groups, v = s.observables["api_token_share"]
        return {b: v[:, groups.index(b)] for b in ("US", "CN")}
    if panel == "api_tokens_access":
        groups, v = s.observables["api_token_share_open_closed"]
        return {g: v[:, groups.index(g)] for g in ("open", "closed")}
    if panel == "deepseek":
        share = provider_share_ai(s, ("deepseek", "deepseek_api"))
        return {c: share[:, s.r(c)] for c in ("CHN", "BLR", "CUB", "RUS")}
    raise KeyError(panel)


_SYMBOLS = {"lower": "triangle-up", "upper": "triangle-down", "approx": "circle-open", "": "circle"}


def calibration_figure(members: list[Summary], points: pl.DataFrame, panel: str,
                       until: date = date(2026, 6, 1)) -> go.Figure:
    """One calibration panel: model mean and band (2023 onwards) and the data points."""
    x = members[0].dates
    n = sum(d <= until for d in x)
    fig = go.Figure()
    series = {k: np.stack([model_series(m, panel)[k] for m in members])
              for k in model_series(members[0], panel)}
    for name, vals in series.items():
        colour = SERIES_COLOURS.get(name, "#333333")
        mean, lo, hi = band(vals[:, :n])
        _band_traces(fig, x[:n], mean, lo, hi, colour, f"model: {name}", name,
                     show_band=len(members) > 1)
    pts = points.filter(pl.col("compared") & (pl.col("panel") == panel))
    for (name, bound), sub in pts.group_by(["series", "bound"], maintain_order=True):
        colour = SERIES_COLOURS.get(name, "#333333")
        text = [f"<b>{r['subject']}</b>: {r['value']:.1%} ({r['unit']})<br>{r['metric']}<br>"
                f"reliability {r['reliability']}{' · ' + r['caveat'] if r['caveat'] else ''}"
                f"<br>source: {r['source'][:120]}{'…' if len(r['source']) > 120 else ''}"
                for r in sub.iter_rows(named=True)]
        err = [182 * 24 * 3600 * 1000 if y else 0 for y in sub["year_only"].to_list()]
        fig.add_trace(go.Scatter(
            x=sub["date"].to_list(), y=sub["value"].to_list(), mode="markers",
            name=f"data: {name}" + (f" ({bound})" if bound else ""), legendgroup=name,
            marker=dict(color=colour, size=11, symbol=_SYMBOLS[bound],
                        line=dict(color="black", width=1)),
            error_x=dict(type="data", array=err, visible=any(err), color=colour, thickness=1),
            text=text, hovertemplate="%{text}<extra></extra>"))
    fig = _layout(fig, PANELS[panel], "share", height=330)
    fig.update_layout(hovermode="closest")
    return fig


# --------------------------------------------------------------------------------------------
# Calibration targets (sim.targets): how far the model is from each figure, in tolerance units

RELIABILITY_COLOURS = {"H": "#1a9850", "M": "#fdae61", "L": "#d73027"}


def target_z(target, values: np.ndarray) -> np.ndarray:
    """Signed distance of simulated values to the target's observed interval, in tolerances.

    0 inside the interval (or a bound), negative below it, positive above it; |z| <= 1 is within
    the figure's uncertainty for a point target.
    """
    v = np.asarray(values, dtype=float)
    d = np.asarray(target.distance(v), dtype=float)
    z = np.asarray(target.transform(v), dtype=float)
    mid = float(target.transform(target.observed))
    return np.sign(z - mid) * d / target.tolerance


def targets_overview_figure(targets, stats: np.ndarray) -> go.Figure:
    """Every target as a row: each run's distance from the figure in tolerance units.

    ``stats`` is (members, targets) in natural units (``sim.targets.statistics``).
    """
    ids = [t.id for t in targets]
    fig = go.Figure()
    fig.add_vrect(x0=-1, x1=1, fillcolor="rgba(0,128,0,0.08)", line_width=0)
    fig.add_vline(x=0, line_color="#888888", line_width=1)
    for rel in ("H", "M", "L"):
        xs, ys, text = [], [], []
        for k, t in enumerate(targets):
            if t.reliability != rel:
                continue
            z = target_z(t, stats[:, k])
            for j, v in enumerate(z):
                if np.isfinite(v):
                    xs.append(float(np.clip(v, -6, 6)))
                    ys.append(t.id)
                    obs = _num(t.lo, t.scale) + ("" if t.lo == t.hi else
                                                 " to " + _num(t.hi, t.scale))
                    text.append(f"<b>{t.id}</b> ({t.kind}, {t.scale})<br>observed {obs} · "
                                f"run {j + 1}: {_num(stats[j, k], t.scale)}<br>z = {v:+.2f}")
        if xs:
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name=f"reliability {rel}",
                                     marker=dict(color=RELIABILITY_COLOURS[rel], size=8,
                                                 line=dict(color="black", width=0.5)),
                                     text=text, hovertemplate="%{text}<extra></extra>"))
    fig.update_yaxes(categoryorder="array", categoryarray=ids[::-1], title_text="")
    fig.update_xaxes(range=[-6.3, 6.3], title_text="distance from the figure, in tolerances "
                     "(shaded: within; clipped at ±6)")
    fig.update_layout(height=max(360, 16 * len(ids) + 120), hovermode="closest",
                      margin=dict(l=10, r=10, t=50, b=10),
                      title=dict(text="Calibration targets: each dot is one run", x=0),
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0.5))
    return fig


def _num(v: float, scale: str = "logit") -> str:
    v = float(v)
    return f"{v:.1%}" if scale == "logit" else f"{v:.3g}"


def target_figure(target, dates: list[date], monthly: np.ndarray,
                  until: date = date(2026, 6, 1)) -> go.Figure:
    """One target: the model's monthly statistic (mean, band) and the observed interval."""
    n = sum(d <= until for d in dates)
    x = dates[:n]
    fig = go.Figure()
    mean, lo, hi = band(monthly[:, :n])
    _band_traces(fig, x, mean, lo, hi, "#6a3d9a", "model (mean, band)", "model",
                 show_band=monthly.shape[0] > 1)
    w0, w1 = target.window
    x0 = date(2023 + w0 // 12, w0 % 12 + 1, 1)
    x1 = date(2023 + w1 // 12, w1 % 12 + 1, 1)
    top = float(max(np.nanmax(hi) if hi.size else 0, target.hi)) * 1.15 or 1
    y0 = target.lo if target.kind != "upper" else 0.0
    y1 = target.hi if target.kind not in ("lower", "order") else top
    fig.add_shape(type="rect", x0=x0, x1=x1 if x1 > x0 else date(x0.year, x0.month, 28),
                  y0=y0, y1=y1, fillcolor="rgba(0,0,0,0.10)", line=dict(color="black", width=1))
    fig.add_trace(go.Scatter(
        x=[x0, x1], y=[target.observed] * 2, mode="lines+markers", name=f"observed ({target.kind})",
        line=dict(color="black", width=2), marker=dict(size=8),
        hovertemplate=f"observed {_num(target.lo, target.scale)}"
        f"{'' if target.lo == target.hi else ' to ' + _num(target.hi, target.scale)}"
        "<extra></extra>"))
    fig = _layout(fig, f"{target.id}: model vs figure (box: observed interval over the window)",
                  "", height=340, percent=target.scale == "logit")
    fig.update_layout(hovermode="x")
    return fig
