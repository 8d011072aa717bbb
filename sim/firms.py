"""Firms: a synthetic, weighted population per country, stored as arrays, decided in one kernel.

Each firm is an individual agent with its own state (current provider, tenure, switching cost,
capacity to self-host, price and trust sensitivity, customisation need), but firms are stored as
a struct of arrays and decided by a numba kernel so that 10^5-10^6 firms stay fast.

Population: every country gets firms in proportion to the square root of its GDP (at least a
floor, so that every country has shares), spread over six sectors and three size classes. Each
firm stands for an equal part of its (country, sector, size) stratum's economic activity; a
country's firms together weigh its GDP, so aggregates are activity-weighted.

Firm heterogeneity (:data:`SECTOR_PROFILE`, :data:`SIZE_PROFILE`) is an assumption: the data
have no sector or size breakdown of AI adoption. The values only rank sectors (government most
trust-sensitive, tech most capable and most in need of customisation) and are documented in
docs/ODD.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from sim.scenario import SECTORS

# sector: (activity share, trust sensitivity, capacity bonus, customisation need). Assumption.
SECTOR_PROFILE = {
    "government": (1 / 6, 2.0, 0.00, 0.2),
    "finance": (1 / 6, 1.5, 0.10, 0.3),
    "health": (1 / 6, 1.5, 0.00, 0.3),
    "tech": (1 / 6, 0.7, 0.25, 1.0),
    "manufacturing": (1 / 6, 1.0, 0.05, 0.4),
    "services": (1 / 6, 0.8, 0.00, 0.3),
}
# size class: (activity share, capacity bonus, price-sensitivity multiplier, switching multiplier)
SIZE_PROFILE = {
    "small": (1 / 3, 0.00, 1.25, 0.7),
    "medium": (1 / 3, 0.10, 1.00, 1.0),
    "large": (1 / 3, 0.20, 0.75, 1.4),
}
SIZES = tuple(SIZE_PROFILE)


@dataclass
class FirmPopulation:
    """All firms, as parallel arrays (index = firm)."""

    country: np.ndarray  # int32
    sector: np.ndarray  # int32
    size: np.ndarray  # int32
    weight: np.ndarray  # float64, USD of activity
    capacity: np.ndarray  # float64 0..1, technical capacity to self-host
    price_sens: np.ndarray  # float64, multiplier on b_cost
    trust_sens: np.ndarray  # float64, multiplier on b_trust
    cust: np.ndarray  # float64, customisation need
    switch_mult: np.ndarray  # float64, multiplier on the switching cost
    current: np.ndarray  # int32, provider index; n_providers means "no AI"
    tenure: np.ndarray  # int32, months with the current provider
    disrupted: np.ndarray  # bool, lost its provider to an API cut-off
    searching: np.ndarray  # bool, lost its provider (ban or cut-off) and has not found another

    @property
    def n(self) -> int:
        """Number of firms."""
        return len(self.country)

    @classmethod
    def synthesize(cls, gdp: np.ndarray, infra: np.ndarray, n_firms: int, n_providers: int,
                   rng: np.random.Generator) -> FirmPopulation:
        """Draw a population of ``n_firms`` firms over countries with the given GDP."""
        n_c = len(gdp)
        floor = max(1, min(8, n_firms // (4 * n_c)))
        if n_firms < floor * n_c:
            raise ValueError(f"firms: {n_firms} is too few; at least {n_c} (one per country) "
                             "are needed")
        raw = np.sqrt(gdp) / np.sqrt(gdp).sum() * (n_firms - floor * n_c)
        counts = floor + np.floor(raw).astype(np.int64)
        rest = n_firms - counts.sum()
        counts[np.argsort(-(raw - np.floor(raw)), kind="stable")[:rest]] += 1
        country = np.repeat(np.arange(n_c, dtype=np.int32), counts)
        n = n_firms
        sec_share = np.array([SECTOR_PROFILE[s][0] for s in SECTORS])
        size_share = np.array([SIZE_PROFILE[s][0] for s in SIZES])
        sector = rng.choice(len(SECTORS), size=n, p=sec_share).astype(np.int32)
        size = rng.choice(len(SIZES), size=n, p=size_share).astype(np.int32)
        # weight: the stratum's activity share of the country's GDP, split among its firms
        stratum = (country.astype(np.int64) * len(SECTORS) + sector) * len(SIZES) + size
        n_strata = n_c * len(SECTORS) * len(SIZES)
        in_stratum = np.bincount(stratum, minlength=n_strata)[stratum]
        weight = gdp[country] * sec_share[sector] * size_share[size] / in_stratum
        # renormalise so that each country's firms weigh its GDP even with empty strata
        tot = np.bincount(country, weights=weight, minlength=n_c)
        weight *= gdp[country] / tot[country]
        sec_trust = np.array([SECTOR_PROFILE[s][1] for s in SECTORS])
        sec_cap = np.array([SECTOR_PROFILE[s][2] for s in SECTORS])
        sec_cust = np.array([SECTOR_PROFILE[s][3] for s in SECTORS])
        size_cap = np.array([SIZE_PROFILE[s][1] for s in SIZES])
        size_price = np.array([SIZE_PROFILE[s][2] for s in SIZES])
        size_switch = np.array([SIZE_PROFILE[s][3] for s in SIZES])
        noise = rng.standard_normal((5, n))
        capacity = np.clip(0.5 * infra[country] + sec_cap[sector] + size_cap[size]
                           + 0.15 * noise[0], 0.0, 1.0)
        return cls(
            country=country, sector=sector, size=size, weight=weight, capacity=capacity,
            price_sens=size_price[size] * np.exp(0.3 * noise[1]),
            trust_sens=sec_trust[sector] * np.exp(0.3 * noise[2]),
            cust=sec_cust[sector] * np.exp(0.3 * noise[3]),
            switch_mult=size_switch[size] * np.exp(0.3 * noise[4]),
            current=np.full(n, n_providers, dtype=np.int32),
            tenure=np.zeros(n, dtype=np.int32),
            disrupted=np.zeros(n, dtype=np.bool_),
            searching=np.zeros(n, dtype=np.bool_),
        )


@numba.njit(cache=True, nogil=True)
def decide(country, sector, weight, capacity, price_sens, trust_sens, cust, switch_mult,
           current, tenure, disrupted, searching, u_reconsider, u_choice, rho, migration_rate,
           lncost_host, lncost_self, capacity_req, b_cost, rest, trust, b_trust, lic, b_lic,
           avail, u_none, switch_cost, switch_growth, is_open,
           out_w, out_self, out_builders, out_disrupted):  # pragma: no cover - numba
    """One month of firm decisions (multinomial logit), and the month's tallies.

    A firm whose provider has become unavailable (ban or cut-off) loses it: it is without AI
    and *searching*, and from the next month looks for another with probability
    ``migration_rate`` a month. Other firms reconsider with probability ``rho``
    (``u_reconsider < rho``). The choice set is the released, allowed providers plus "no AI";
    the pick is by inverse-CDF on ``u_choice`` over the logit probabilities, an exact
    multinomial-logit draw using one uniform per firm (common random numbers).

    Tallies (activity-weighted): ``out_w[c, p]`` usage per country and provider (last column:
    no AI), ``out_self[c, p]`` self-hosted open-weight usage, ``out_builders[p]`` customisation
    need of open-weight users (ecosystem builders), ``out_disrupted[c]`` [served, total] weight
    of firms that lost their provider to a cut-off.
    """
    n = country.shape[0]
    n_p = rest.shape[1]
    none = n_p
    util = np.empty(n_p + 1)
    for i in range(n):
        c = country[i]
        s = sector[i]
        cur = current[i]
        if cur < none and not avail[c, s, cur]:
            current[i] = none
            tenure[i] = 0
            searching[i] = True
        elif u_reconsider[i] < (migration_rate if searching[i] else rho):
            sc = 0.0
            if cur < none:
                ten = min(tenure[i], 60)
                sc = switch_cost * switch_mult[i] * (1.0 + switch_growth * ten / 12.0)
            best = -1e300
            selfhost = capacity[i] >= capacity_req[c]
            for p in range(n_p):
                if avail[c, s, p]:
                    lc = lncost_host[c, p]
                    if is_open[p] and selfhost and lncost_self[c, p] < lc:
                        lc = lncost_self[c, p]
                    u = (-b_cost * price_sens[i] * lc + rest[c, p]
                         + b_trust * trust[c, p] * trust_sens[i] + b_lic * lic[p] * cust[i])
                    if p != cur:
                        u -= sc
                    util[p] = u
                    if u > best:
                        best = u
                else:
                    util[p] = -1e300
            u0 = u_none[c]
            if cur < none:
                u0 -= sc
            util[none] = u0
            if u0 > best:
                best = u0
            total = 0.0
            for p in range(n_p + 1):
                if util[p] > -1e299:
                    util[p] = np.exp(util[p] - best)
                    total += util[p]
                else:
                    util[p] = 0.0
            target = u_choice[i] * total
            acc = 0.0
            choice = none
            for p in range(n_p + 1):
                if util[p] > 0.0:
                    acc += util[p]
                    choice = p
                    if acc >= target:
                        break
            if choice != cur:
                current[i] = choice
                tenure[i] = 0
            else:
                tenure[i] += 1
            if choice < none:
                searching[i] = False
        else:
            tenure[i] += 1
        cur = current[i]
        w = weight[i]
        out_w[c, cur] += w
        if cur < none and is_open[cur]:
            out_builders[cur] += w * cust[i]
            if capacity[i] >= capacity_req[c] and lncost_self[c, cur] < lncost_host[c, cur]:
                out_self[c, cur] += w
        if disrupted[i]:
            out_disrupted[c, 1] += w
            if cur < none:
                out_disrupted[c, 0] += w


@numba.njit(cache=True, nogil=True)
def mark_disrupted(country, sector, current, disrupted, cut):  # pragma: no cover - numba
    """Flag firms whose current provider is cut off this month (``cut[c, s, p]``)."""
    n_new = 0
    for i in range(country.shape[0]):
        cur = current[i]
        if cur < cut.shape[2] and cut[country[i], sector[i], cur]:
            disrupted[i] = True
            n_new += 1
    return n_new
