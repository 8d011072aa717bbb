"""Drivers: why a country's firms lean to one bloc, split into the terms of the utility.

For a country and a month, every firm's utility for every provider it may use is split into
its terms (cost, performance, trust, ecosystem, peers, licence, lock-in). Within a bloc the
terms are averaged with the firm's logit choice probabilities over that bloc's providers (the
providers it would actually pick from), then over the country's firms weighted by activity.
The gap between two blocs in a term is how much that term pulls firms toward one of them.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl

from sim.countries import default_countries
from sim.model import DiffusionModel
from sim.providers import BLOC_OF, BLOCS, IS_OPEN, N_PROVIDERS
from sim.scenario import Scenario

COMPONENTS = ("cost", "performance", "trust", "ecosystem", "peers", "licence", "lock_in")


def _month(scenario: Scenario, when: date) -> int:
    t = (when.year - scenario.start.year) * 12 + when.month - scenario.start.month
    if not 0 <= t < scenario.n_months:
        raise ValueError(f"when: {when} is outside the scenario ({scenario.start} to "
                         f"{scenario.end})")
    return t


def components(model: DiffusionModel, country: int) -> tuple[np.ndarray, np.ndarray,
                                                             np.ndarray]:
    """Utility terms (firms, components, providers), availability and weights, this month."""
    a = model.spec.assumptions
    f = model.firms
    terms = model.terms()
    idx = np.flatnonzero(f.country == country)
    c = country
    selfhost = f.capacity[idx] >= terms["cap_req"][c]
    lc = np.broadcast_to(terms["ln_host"][c], (idx.size, N_PROVIDERS)).copy()
    cheaper = IS_OPEN & (terms["ln_self"][c] < terms["ln_host"][c])
    lc[np.ix_(selfhost, cheaper)] = terms["ln_self"][c][cheaper]
    ten = np.minimum(f.tenure[idx], 60)
    sc = a.switch_cost * f.switch_mult[idx] * (1 + a.switch_growth * ten / 12.0)
    cur = f.current[idx]
    switching = (np.arange(N_PROVIDERS)[None, :] != cur[:, None]) & (cur < N_PROVIDERS)[:, None]
    comp = np.stack([
        -a.b_cost * f.price_sens[idx, None] * lc,
        np.broadcast_to(a.b_perf * terms["perf"], lc.shape),
        a.b_trust * terms["trust"][c][None, :] * f.trust_sens[idx, None],
        np.broadcast_to(a.b_eco * terms["eco"], lc.shape),
        np.broadcast_to(a.b_peer * terms["peer"][c], lc.shape),
        a.b_lic * model.paths.openness[model.t][None, :] * f.cust[idx, None],
        -sc[:, None] * switching,
    ], axis=1)
    avail = terms["avail"][c, f.sector[idx], :]
    return comp, avail, f.weight[idx]


def decompose(scenario: Scenario, seed: int, n_firms: int, country: str,
              when: date) -> pl.DataFrame:
    """Utility terms by bloc for ``country`` (ISO3) at month ``when``.

    Returns a frame with columns ``component``, ``bloc``, ``value`` (utility units, activity-
    weighted mean over the country's firms), including a ``total`` row per bloc, plus
    ``choice_share``: the bloc's share of the firms' choice probabilities that month.
    """
    tab = default_countries()
    if country not in tab.iso3:
        raise ValueError(f"country: {country!r} is not a modelled ISO3 code")
    c = tab.iso3.index(country)
    t = _month(scenario, when)
    model = DiffusionModel(scenario, seed, n_firms)
    while model.t < t:
        model.step()
    comp, avail, w = components(model, c)
    util = np.where(avail, comp.sum(axis=1), -np.inf)
    u_none = model.terms()["u_none"][c]
    top = np.maximum(util.max(axis=1), u_none)
    ex = np.exp(util - top[:, None])
    ex_none = np.exp(u_none - top)
    prob = ex / (ex.sum(axis=1) + ex_none)[:, None]
    rows = []
    for b, bloc in enumerate(BLOCS):
        mask = (BLOC_OF == b) & avail.any(axis=0)
        if not mask.any():
            continue
        pb = prob[:, mask]
        within = pb / np.maximum(pb.sum(axis=1, keepdims=True), 1e-300)
        has = avail[:, mask].any(axis=1)
        ww = w * has
        if ww.sum() == 0:
            continue
        values = {}
        for k, name in enumerate(COMPONENTS):
            per_firm = np.where(avail[:, mask], comp[:, k][:, mask] * within, 0).sum(axis=1)
            values[name] = float((per_firm * ww).sum() / ww.sum())
        values["total"] = sum(values.values())
        values["choice_share"] = float((pb.sum(axis=1) * w).sum() / w.sum())
        rows += [{"component": k, "bloc": bloc, "value": v} for k, v in values.items()]
    return pl.DataFrame(rows, schema={"component": pl.String, "bloc": pl.String,
                                      "value": pl.Float64})


def gap(frame: pl.DataFrame, a: str = "US", b: str = "CN") -> pl.DataFrame:
    """Per component, bloc ``a`` minus bloc ``b`` (positive: the term favours ``a``)."""
    wide = frame.pivot(on="bloc", index="component", values="value")
    if a not in wide.columns or b not in wide.columns:
        raise ValueError(f"bloc: need both {a} and {b} available in that country and month")
    return wide.select("component", (pl.col(a) - pl.col(b)).alias(f"{a}_minus_{b}"))
