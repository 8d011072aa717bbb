"""Countries: one Mesa agent per UN member state, with real attributes from ``countries.csv``.

The table gives income group, population, GDP per capita, internet use, AI readiness (Oxford
Insights), the IMF AI Preparedness pillars, UN General Assembly ideal-point distances to the US
and China, bloc memberships, Belt and Road status and recorded DeepSeek restrictions.

Gaps are filled, never silently: a missing number takes the median of the country's income group
(or World Bank region when the income group is missing) and the field is listed in ``imputed``.
Taiwan is in the source table but has no population, GDP, income group or UN voting record, so it
is left out rather than filled in; Venezuela has no income group and is left out of the
income-group aggregates (it counts in the world).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache

import mesa
import numpy as np

from sim.inputs import INCOME_GROUPS, DataError, parse_bool, parse_float, parse_month, read_rows
from sim.providers import BLOCS

MEMBERSHIPS = {
    "EU": "eu_member", "EEA": "eea_member_gdpr_applies", "NATO": "nato_member",
    "BRICS": "brics_member", "SCO": "sco_member", "OECD": "oecd_member", "G7": "g7_member",
    "G20": "g20_member", "BRI": "bri_mou",
}
NUMERIC = {  # column: (lo, hi)
    "population": (0, 2e9), "gdp_per_capita_usd": (0, 1e6), "internet_users_pct": (0, 100),
    "oxford_gov_ai_readiness_2023": (0, 100), "imf_aipi_digital_infra_2023": (0, 1),
    "imf_aipi_regulation_ethics_2023": (0, 1), "unga_dist_usa_2023": (0, 10),
    "unga_dist_chn_2023": (0, 10), "unga_idealpoint_all_2023": (-10, 10),
}
REQUIRED = ("iso3", "name", "region_wb", "income_group", "un_member", *MEMBERSHIPS.values(),
            *NUMERIC, "deepseek_restriction", "deepseek_restriction_date")

# Restriction dates that countries.csv leaves empty, read from trust_events.csv rows.
RESTRICTION_DATE_FALLBACK = {
    "NLD": date(2025, 2, 1),  # trust_events.csv 2025-02-06: ban on central government devices
    "CZE": date(2025, 7, 1),  # trust_events.csv 2025-07-09: ban in state/public administration
}


@dataclass(frozen=True)
class CountryTable:
    """Country attributes as arrays, one row per modelled country (index = agent id order)."""

    iso3: tuple[str, ...]
    name: tuple[str, ...]
    region: tuple[str, ...]  # World Bank region
    income: np.ndarray  # index into INCOME_GROUPS, -1 when unclassified
    population: np.ndarray
    gdp_pc: np.ndarray  # current USD
    gdp: np.ndarray  # USD, population x GDP per capita
    internet: np.ndarray  # 0..1
    readiness: np.ndarray  # 0..1 (Oxford Insights / 100)
    infra: np.ndarray  # IMF digital-infrastructure pillar rescaled to 0..1
    data_concern: np.ndarray  # 0..1: GDPR applies (EEA) and IMF regulation pillar
    align: np.ndarray  # (C, 4) alignment with US, CN, EU, OTHER in 0..1
    home_bloc: np.ndarray  # index into BLOCS, -1 for none
    idealpoint: np.ndarray
    members: dict[str, np.ndarray] = field(default_factory=dict)
    restriction: tuple[str, ...] = ()
    restriction_date: tuple[date | None, ...] = ()
    imputed: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Number of countries."""
        return len(self.iso3)

    def group_mask(self, group: str) -> np.ndarray:
        """Boolean mask of the countries in a named group."""
        if group == "ALL":
            return np.ones(self.n, dtype=bool)
        if group in INCOME_GROUPS:
            return self.income == INCOME_GROUPS.index(group)
        if group in self.members:
            return self.members[group].copy()
        if group == "ALIGNED_US":
            return self.align[:, 0] > self.align[:, 1]
        if group == "ALIGNED_CN":
            return self.align[:, 1] > self.align[:, 0]
        regions = np.array(self.region)
        if group in set(self.region):
            return regions == group
        raise DataError(f"unknown group {group!r}")


def load_countries(data_dir=None) -> CountryTable:
    """Load and check the UN member states from ``countries.csv``."""
    rows = [r for r in read_rows("countries.csv", REQUIRED, data_dir)
            if parse_bool(r, "un_member")]
    if len(rows) < 150:
        raise DataError(f"countries.csv: only {len(rows)} UN members; expected 193")
    seen = set()
    for r in rows:
        code = r["iso3"]
        if len(code) != 3 or not code.isalpha() or not code.isupper():
            raise DataError(f"{r['_file']}: row {r['_line']}, column 'iso3': {code!r} is not an "
                            "ISO3 code (three capital letters)")
        if code in seen:
            raise DataError(f"{r['_file']}: row {r['_line']}, column 'iso3': {code} repeated")
        seen.add(code)
        inc = r["income_group"].strip()
        if inc and inc not in INCOME_GROUPS:
            raise DataError(f"{r['_file']}: row {r['_line']}, column 'income_group': {inc!r} is "
                            f"not one of {', '.join(INCOME_GROUPS)}")
    rows.sort(key=lambda r: r["iso3"])
    income = np.array([INCOME_GROUPS.index(r["income_group"]) if r["income_group"] else -1
                       for r in rows])
    values = {c: np.array([np.nan if (v := parse_float(r, c, lo=lo, hi=hi)) is None else v
                           for r in rows]) for c, (lo, hi) in NUMERIC.items()}
    if np.isnan(values["population"]).any():
        missing = [r["iso3"] for r, v in zip(rows, values["population"]) if np.isnan(v)]
        raise DataError(f"countries.csv: population missing for {missing}; it weighs every "
                        "country and cannot be filled in")
    regions = [r["region_wb"] for r in rows]
    imputed: dict[str, list[str]] = {}
    for col, arr in values.items():
        for i in np.flatnonzero(np.isnan(arr)):
            peers = income == income[i] if income[i] >= 0 else \
                np.array([g == regions[i] for g in regions])
            pool = arr[peers & ~np.isnan(arr)]
            if pool.size == 0:
                pool = arr[~np.isnan(arr)]
            arr[i] = float(np.median(pool))
            imputed.setdefault(rows[i]["iso3"], []).append(col)
    members = {g: np.array([parse_bool(r, col) for r in rows]) for g, col in MEMBERSHIPS.items()}
    infra = values["imf_aipi_digital_infra_2023"]
    regulation = values["imf_aipi_regulation_ethics_2023"]
    reg01 = (regulation - regulation.min()) / max(np.ptp(regulation), 1e-12)
    data_concern = 0.5 * members["EEA"] + 0.5 * reg01
    # alignment: 1 - ideal-point distance / largest distance; EU = distance to the EU27 mean
    ip = values["unga_idealpoint_all_2023"]
    d_us = values["unga_dist_usa_2023"]
    d_cn = values["unga_dist_chn_2023"]
    d_eu = np.abs(ip - ip[members["EU"]].mean())
    dmax = max(d_us.max(), d_cn.max(), d_eu.max())
    align = np.stack([1 - d_us / dmax, 1 - d_cn / dmax, 1 - d_eu / dmax,
                      np.full(len(rows), 0.5)], axis=1)
    iso = [r["iso3"] for r in rows]
    home = np.full(len(rows), -1)
    home[iso.index("USA")] = BLOCS.index("US")
    home[iso.index("CHN")] = BLOCS.index("CN")
    home[members["EU"]] = BLOCS.index("EU")
    align[home >= 0, home[home >= 0]] = 1.0
    rdate = []
    for r in rows:
        d = parse_month(r, "deepseek_restriction_date", required=False)
        rdate.append(d or RESTRICTION_DATE_FALLBACK.get(r["iso3"]))
    return CountryTable(
        iso3=tuple(iso), name=tuple(r["name"] for r in rows), region=tuple(regions),
        income=income, population=values["population"], gdp_pc=values["gdp_per_capita_usd"],
        gdp=values["population"] * values["gdp_per_capita_usd"],
        internet=values["internet_users_pct"] / 100,
        readiness=values["oxford_gov_ai_readiness_2023"] / 100,
        infra=(infra - infra.min()) / max(np.ptp(infra), 1e-12), data_concern=data_concern,
        align=align, home_bloc=home, idealpoint=ip, members=members,
        restriction=tuple(r["deepseek_restriction"] for r in rows),
        restriction_date=tuple(rdate),
        imputed={k: tuple(v) for k, v in imputed.items()},
    )


@lru_cache(maxsize=1)
def default_countries() -> CountryTable:
    """The shipped country table (cached)."""
    return load_countries()


def known_iso3() -> set[str]:
    """ISO3 codes of the modelled countries."""
    return set(default_countries().iso3)


def known_groups() -> set[str]:
    """Names usable as event targets."""
    table = default_countries()
    return {"ALL", "ALIGNED_US", "ALIGNED_CN", *INCOME_GROUPS, *table.members, *table.region}


class Country(mesa.Agent):
    """A country: it holds its policy state and decides policies once a year.

    Monthly quantities (utilities, shares) are computed for all countries at once in
    :class:`sim.model.DiffusionModel`; this agent's :meth:`policy_step` is the yearly decision:

    1. restrict a foreign bloc in critical sectors (government, finance, health) when its
       perceived risk (misalignment x insecurity, plus live security shocks) passes
       ``restrict_threshold``, with probability ``restrict_prob``;
    2. follow an ally's restriction with probability ``follow_prob`` x alignment similarity
       (allies share NATO, EU, BRICS or SCO membership);
    3. start a sovereign-AI programme when its dependency on one foreign bloc passes
       ``sovereign_threshold``, with probability ``sovereign_prob`` x AI readiness.

    Decisions read last year's state of every country (synchronous update), so the order in
    which countries act does not matter; each country has its own row of the year's draws.
    """

    def __init__(self, model, idx: int):
        super().__init__(model)
        self.idx = idx
        self.iso3 = model.countries.iso3[idx]
        self.restricted = np.zeros(len(BLOCS), dtype=bool)  # endogenous restrictions
        self.sovereign = False

    N_DRAWS = 3 + 2 * len(BLOCS)  # uniforms a country uses each year, whatever it decides

    def policy_step(self, snapshot: dict, u: np.ndarray) -> list[dict]:
        """Decide this year's policies from last year's ``snapshot`` and this country's draws.

        ``u`` is this country's row of the year's uniforms (:data:`N_DRAWS` values): its draws
        do not depend on what any other country decides (common random numbers).
        """
        m = self.model
        a = m.spec.assumptions
        c = self.idx
        tab = m.countries
        actions = []
        home = tab.home_bloc[c]
        for b, bloc in enumerate(BLOCS[:3]):
            if b == home or self.restricted[b]:
                continue
            risk = (1 - tab.align[c, b]) * (1 - snapshot["bloc_security"][b]) \
                + snapshot["shock"][c, b]
            if risk > a.restrict_threshold and u[b] < a.restrict_prob:
                self.restricted[b] = True
                actions.append({"action": "restrict", "bloc": bloc, "reason": f"risk {risk:.2f}"})
                continue
            allies = snapshot["allies"][c] & snapshot["restricted"][:, b]
            if allies.any():
                sim_ = 1 - np.abs(tab.idealpoint[allies] - tab.idealpoint[c]).min() / \
                    max(np.ptp(tab.idealpoint), 1e-12)
                if u[len(BLOCS) + b] < a.follow_prob * sim_:
                    self.restricted[b] = True
                    actions.append({"action": "follow_ally", "bloc": bloc,
                                    "reason": f"similarity {sim_:.2f}"})
        if not self.sovereign:
            dep = snapshot["dependency"][c].copy()
            if home >= 0:
                dep[home] = 0.0
            if dep.max() > a.sovereign_threshold and u[-1] < a.sovereign_prob * tab.readiness[c]:
                self.sovereign = True
                actions.append({"action": "sovereign_ai", "bloc": BLOCS[int(dep.argmax())],
                                "reason": f"dependency {dep.max():.2f}"})
        return actions
