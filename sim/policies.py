"""Policies: scenario events, recorded restrictions and countries' own decisions, month by month.

:class:`PolicySchedule` turns events (bans, security shocks, API cut-offs, data-localisation
laws, sovereign-AI programmes) into masks over countries, sectors and providers once, then
answers per month: which providers each (country, sector) may use, the trust shock per
(country, bloc), the extra data-protection concern and the sovereign-AI subsidy per country.

Recorded restrictions (``countries.csv`` ``deepseek_restriction``) become bans from their dates:
a national app block bars DeepSeek's own service (``deepseek_api``) for everyone; government
device or administration bans bar DeepSeek's models (``deepseek``, ``deepseek_api``) in the
government sector. Advisories, app-store removal requests and undocumented reports are not bans.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import numpy as np

from sim.countries import CountryTable
from sim.providers import BLOCS, INDEX, IS_OPEN, N_PROVIDERS, PROVIDERS, month_index
from sim.scenario import (
    SECTORS,
    Ban,
    Cutoff,
    DataLocalisation,
    Scenario,
    SecurityShock,
    SovereignAI,
    Target,
    Trigger,
)

CRITICAL_SECTORS = ("government", "finance", "health")
RECORDED_BANS = {  # restriction kind: (providers, sectors or () for all)
    "national_app_block": (("deepseek_api",), ()),
    "government_devices": (("deepseek", "deepseek_api"), ("government",)),
    "public_administration_ban": (("deepseek", "deepseek_api"), ("government",)),
    "agency_or_state_level": (("deepseek", "deepseek_api"), ("government",)),
}


@dataclass
class Rule:
    """One resolved rule: a time window and masks."""

    kind: str
    start: int
    end: int  # exclusive month index; large for "for good"
    countries: np.ndarray  # (C,) bool
    sectors: np.ndarray  # (S,) bool
    providers: np.ndarray = field(default_factory=lambda: np.zeros(N_PROVIDERS, bool))
    bloc: int = -1
    size: float = 0.0
    half_life: float = 1.0
    origin: str = "scenario"
    label: str = ""
    ramp: int = 0

    def strength(self, t: int) -> float:
        """Fraction of full strength at month ``t`` (linear ramp from the start)."""
        return 1.0 if self.ramp <= 0 else min(1.0, (t - self.start + 1) / self.ramp)


@dataclass
class TriggerRule:
    """A state-triggered policy, fired at most once per country."""

    start: int
    end: int
    countries: np.ndarray
    sectors: np.ndarray
    bloc: int  # -1: any foreign bloc
    dependency: str
    threshold: float
    action: str
    subsidy: float
    fired: np.ndarray
    label: str = ""


def resolve_target(target: Target, countries: CountryTable) -> tuple[np.ndarray, np.ndarray]:
    """Country and sector masks of a target (empty lists mean everyone)."""
    cmask = np.zeros(countries.n, dtype=bool)
    if not target.countries and not target.groups:
        cmask[:] = True
    for code in target.countries:
        cmask[countries.iso3.index(code)] = True
    for group in target.groups:
        cmask |= countries.group_mask(group)
    smask = np.array([not target.sectors or s in target.sectors for s in SECTORS])
    return cmask, smask


def _window(ev, start: date) -> tuple[int, int]:
    s = month_index(ev.start, start)
    e = month_index(ev.end, start) if ev.end is not None else 10**6
    return s, e


class PolicySchedule:
    """All policy rules of a run, queried month by month."""

    def __init__(self, scenario: Scenario, countries: CountryTable):
        self.countries = countries
        self.rules: list[Rule] = []
        self.triggers: list[TriggerRule] = []
        self._mask_key: tuple | None = None
        self._masks: tuple[np.ndarray, np.ndarray] = (np.empty(0), np.empty(0))
        start = scenario.start
        bloc_mask = {b: np.array([p.bloc == b for p in PROVIDERS]) for b in BLOCS}
        api_mask = ~IS_OPEN
        if scenario.levers.include_recorded_restrictions:
            for c, (kind, when) in enumerate(zip(countries.restriction,
                                                 countries.restriction_date)):
                if kind not in RECORDED_BANS or when is None:
                    continue
                provs, secs = RECORDED_BANS[kind]
                pm = np.zeros(N_PROVIDERS, bool)
                pm[[INDEX[p] for p in provs]] = True
                cm = np.zeros(countries.n, bool)
                cm[c] = True
                sm = np.array([not secs or s in secs for s in SECTORS])
                self.rules.append(Rule("ban", month_index(when, start), 10**6, cm, sm, pm,
                                       origin="recorded", label=f"{countries.iso3[c]}: {kind}"))
        for ev in scenario.events:
            s, e = _window(ev, start)
            cm, sm = resolve_target(ev.target, countries)
            if isinstance(ev, Ban):
                pm = np.zeros(N_PROVIDERS, bool)
                if ev.bloc:
                    pm |= bloc_mask[ev.bloc]
                for p in ev.providers:
                    pm[INDEX[p]] = True
                self.rules.append(Rule("ban", s, e, cm, sm, pm, label=ev.note))
            elif isinstance(ev, Cutoff):
                pm = bloc_mask[ev.bloc] & api_mask
                self.rules.append(Rule("cutoff", s, e, cm, sm, pm, bloc=BLOCS.index(ev.bloc),
                                       label=ev.note))
            elif isinstance(ev, SecurityShock):
                self.rules.append(Rule("shock", s, e, cm, sm, bloc=BLOCS.index(ev.bloc),
                                       size=ev.size, half_life=ev.half_life_months,
                                       label=ev.note, ramp=ev.ramp_months))
            elif isinstance(ev, DataLocalisation):
                self.rules.append(Rule("localisation", s, e, cm, sm, size=ev.strength,
                                       label=ev.note, ramp=ev.ramp_months))
            elif isinstance(ev, SovereignAI):
                self.rules.append(Rule("sovereign", s, e, cm, sm, size=ev.subsidy,
                                       label=ev.note, ramp=ev.ramp_months))
            elif isinstance(ev, Trigger):
                if not ev.target.sectors and ev.action == "restrict":
                    sm = np.array([x in CRITICAL_SECTORS for x in SECTORS])
                self.triggers.append(TriggerRule(
                    s, e, cm, sm, BLOCS.index(ev.bloc) if ev.bloc else -1, ev.dependency,
                    ev.threshold, ev.action, ev.subsidy, np.zeros(countries.n, bool),
                    ev.note))

    def add_restriction(self, c: int, bloc: int, t: int, origin: str,
                        sectors: np.ndarray | None = None) -> None:
        """A country's own restriction of a bloc (default: in critical sectors) from ``t``."""
        cm = np.zeros(self.countries.n, bool)
        cm[c] = True
        sm = sectors if sectors is not None else \
            np.array([s in CRITICAL_SECTORS for s in SECTORS])
        pm = np.array([p.bloc == BLOCS[bloc] for p in PROVIDERS])
        self.rules.append(Rule("ban", t, 10**6, cm, sm, pm, origin=origin,
                               label=f"{self.countries.iso3[c]} restricts {BLOCS[bloc]}"))

    def add_sovereign(self, c: int, t: int, subsidy: float, origin: str = "endogenous") -> None:
        """A country's own sovereign-AI programme from month ``t``."""
        cm = np.zeros(self.countries.n, bool)
        cm[c] = True
        self.rules.append(Rule("sovereign", t, 10**6, cm, np.ones(len(SECTORS), bool),
                               size=subsidy, origin=origin))

    def fire_triggers(self, t: int, infra: np.ndarray, model: np.ndarray) -> list[dict]:
        """Fire state-triggered policies from last month's dependency (country, bloc)."""
        actions = []
        home = self.countries.home_bloc
        for tr in self.triggers:
            if t < tr.start or t >= tr.end:
                continue
            dep = {"infra": infra, "model": model, "total": infra + model}[tr.dependency].copy()
            dep[np.arange(self.countries.n)[home >= 0], home[home >= 0]] = 0.0  # foreign only
            watched = dep[:, tr.bloc] if tr.bloc >= 0 else dep.max(axis=1)
            which = dep.argmax(axis=1) if tr.bloc < 0 else np.full(len(dep), tr.bloc)
            hit = tr.countries & ~tr.fired & (watched > tr.threshold)
            for c in np.flatnonzero(hit):
                tr.fired[c] = True
                if tr.action == "sovereign_ai":
                    self.add_sovereign(c, t, tr.subsidy, origin="trigger")
                else:
                    self.add_restriction(c, int(which[c]), t, "trigger", tr.sectors)
                actions.append({"country": self.countries.iso3[c], "action": tr.action,
                                "bloc": BLOCS[int(which[c])],
                                "reason": f"{tr.dependency} dependency {watched[c]:.2f} > "
                                          f"{tr.threshold}"})
        return actions

    def month(self, t: int) -> dict:
        """Resolved policy state at month ``t``.

        The ban and cut-off masks are rebuilt only when the set of active rules changes, so a
        month with nothing new costs little.
        """
        n_c = self.countries.n
        active = [i for i, r in enumerate(self.rules) if r.start <= t < r.end]
        key = tuple(i for i in active if self.rules[i].kind in ("ban", "cutoff"))
        if key != self._mask_key:
            blocked = np.zeros((n_c, len(SECTORS), N_PROVIDERS), dtype=bool)
            cut = np.zeros_like(blocked)
            for i in key:
                r = self.rules[i]
                m = r.countries[:, None, None] & r.sectors[None, :, None] & \
                    r.providers[None, None, :]
                (blocked if r.kind == "ban" else cut)[m] = True
            self._mask_key, self._masks = key, (blocked, cut)
        blocked, cut = self._masks
        shock = np.zeros((n_c, len(BLOCS)))
        concern = np.zeros(n_c)
        subsidy = np.zeros(n_c)
        for i in active:
            r = self.rules[i]
            if r.kind == "shock":
                shock[r.countries, r.bloc] += (r.size * r.strength(t)
                                               * 0.5 ** ((t - r.start) / r.half_life))
            elif r.kind == "localisation":
                concern[r.countries] += r.size * r.strength(t)
            elif r.kind == "sovereign":
                subsidy[r.countries] = np.maximum(subsidy[r.countries],
                                                  r.size * r.strength(t))
        return {"blocked": blocked, "cut": cut, "shock": shock, "concern": concern,
                "subsidy": subsidy}

    def starts_at(self, t: int, kind: str) -> list[Rule]:
        """Rules of ``kind`` that start at month ``t``."""
        return [r for r in self.rules if r.kind == kind and r.start == t]
