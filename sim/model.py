"""The model: countries (Mesa agents) and firms (arrays) choosing AI providers, month by month.

One obvious way to run it, shared by the CLI, sweeps, calibration, the app and the tests::

    from sim import run, load_scenario
    result = run(load_scenario("scenarios/baseline.yaml"), seed=1, n_firms=20_000)
"""

from __future__ import annotations

import time
from datetime import date
from functools import lru_cache

import mesa
import numpy as np

from sim.countries import Country, CountryTable, default_countries
from sim.firms import FirmPopulation, decide, mark_disrupted
from sim.policies import PolicySchedule
from sim.providers import (
    BLOC_OF,
    BLOCS,
    INDEX,
    IS_OPEN,
    N_PROVIDERS,
    PROVIDERS,
    MeasuredPaths,
    measured_paths,
    trajectories,
)
from sim.scenario import SECTORS, Scenario

DEFAULT_FIRMS = 20_000
MAX_FIRMS = 2_000_000
ECO_OF = np.array([INDEX[p.ecosystem_of] if p.ecosystem_of else i
                   for i, p in enumerate(PROVIDERS)])
HAS_ECO = np.array([p.access == "open_weight" or p.ecosystem_of is not None for p in PROVIDERS])


@lru_cache(maxsize=1)
def default_measured() -> MeasuredPaths:
    """Provider paths measured from the shipped data (cached)."""
    return measured_paths()


class Streams:
    """Independent random streams, all derived from one seed (common random numbers).

    Each decision family has its own stream keyed by what it is about, so a policy that changes
    one country's or one month's draws leaves every other draw as it was:
    ``(0,)`` firm population, ``(1, month)`` firm reconsideration and choice (element i is firm
    i's), ``(2, year)`` countries' yearly policy decisions (row c is country c's).
    """

    def __init__(self, seed: int):
        if not isinstance(seed, int | np.integer) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed: {seed!r} is not allowed; use an integer >= 0")
        self.seed = int(seed)

    def _gen(self, *key: int) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64(
            np.random.SeedSequence(entropy=self.seed, spawn_key=key)))

    def population(self) -> np.random.Generator:
        """Stream for drawing the firm population."""
        return self._gen(0)

    def firms(self, month: int) -> np.random.Generator:
        """Stream for firms' draws in a month."""
        return self._gen(1, month)

    def countries(self, year: int) -> np.random.Generator:
        """Stream for countries' policy decisions in a year (one row of draws per country)."""
        return self._gen(2, year)


class DiffusionModel(mesa.Model):
    """Countries and firms choosing between AI providers.

    Step order (one step = one month), written once here and kept true to the code:

    1. **Policy step**. Yearly (January, from ``policy_start_year``, if ``endogenous_policies``):
       every :class:`~sim.countries.Country` decides on restrictions, following allies and
       sovereign-AI programmes from last month's state. Monthly: the scenario's triggers fire
       for countries whose dependency passed their threshold last month. New rules start now.
    2. **Environment**: provider quality, gap, price and licence for the month (from data until
       2025-12, from the levers after); active bans, cut-offs, shocks, data-localisation laws and
       sovereign-AI subsidies; which providers each (country, sector) may use. Firms whose
       provider was just cut off are marked disrupted.
    3. **Country-level utility terms**, vectorised over countries: ln(cost / income) for hosted
       and self-hosted use, the performance gap, ecosystem, peers (last month's shares), trust,
       licence, and the appeal of "no AI yet".
    4. **Firms decide** (one numba kernel): a firm whose provider became unavailable loses it
       and searches (``migration_rate`` a month); others reconsider at ``rho``; choices are
       multinomial logit with switching costs.
    5. **Ecosystem**: new Hugging Face derivatives per open family from its builders, licence
       and quality; stocks grow and feed next month's utility.
    6. **Record** this month's tallies for the outcomes.
    """

    def __init__(self, scenario: Scenario, seed: int, n_firms: int = DEFAULT_FIRMS,
                 countries: CountryTable | None = None, measured: MeasuredPaths | None = None):
        if not isinstance(n_firms, int | np.integer) or not (1_000 <= n_firms <= MAX_FIRMS):
            raise ValueError(f"firms: {n_firms!r} is not allowed; use an integer from 1000 "
                             f"to {MAX_FIRMS}")
        self.streams = Streams(seed)
        super().__init__(rng=self.streams.seed)
        self.spec = scenario
        self.countries = countries or default_countries()
        self.measured = measured or default_measured()
        self.n_months = scenario.n_months
        self.paths = trajectories(self.measured, self.n_months, scenario.start,
                                  scenario.levers, scenario.assumptions)
        self.policies = PolicySchedule(scenario, self.countries)
        for idx in range(self.countries.n):
            Country(self, idx)
        self.country_agents = sorted(self.agents, key=lambda a: a.idx)
        self.firms = FirmPopulation.synthesize(self.countries.gdp, self.countries.infra,
                                               int(n_firms), N_PROVIDERS,
                                               self.streams.population())
        self.eco_stock = np.zeros(N_PROVIDERS)  # thousand derivatives
        n_t, n_c, n_p = self.n_months, self.countries.n, N_PROVIDERS
        self.record = {
            "usage": np.zeros((n_t, n_c, n_p + 1)),
            "selfhost": np.zeros((n_t, n_c, n_p)),
            "builders": np.zeros((n_t, n_p)),
            "new_derivatives": np.zeros((n_t, n_p)),
            "eco_stock": np.zeros((n_t, n_p)),
            "disrupted": np.zeros((n_t, n_c, 2)),
        }
        self.actions: list[dict] = []
        self.t = 0
        self._peer = np.zeros((n_c, n_p))
        self._prev_cut = np.zeros((n_c, len(SECTORS), n_p), dtype=bool)
        self._builder_norm = float((self.firms.weight * self.firms.cust).sum())
        self._const_country()

    def _const_country(self) -> None:
        tab = self.countries
        a = self.spec.assumptions
        self._lninc = np.log(tab.gdp_pc)
        self._compute_mult = 1.0 / (0.5 + tab.infra)  # 2x cost with no digital infrastructure
        self._api_foreign = (~IS_OPEN)[None, :] & (BLOC_OF[None, :] != tab.home_bloc[:, None])
        self._align = tab.align[:, BLOC_OF]  # (C, P)
        self._none_c = a.none_base - a.b_internet * tab.internet

    @property
    def date(self) -> date:
        """Calendar month of the current step."""
        m = self.spec.start.month - 1 + self.t
        return date(self.spec.start.year + m // 12, m % 12 + 1, 1)

    def _snapshot(self) -> dict:
        tab = self.countries
        usage = self.record["usage"][self.t - 1] if self.t > 0 else np.zeros((tab.n,
                                                                              N_PROVIDERS + 1))
        ai = usage[:, :N_PROVIDERS]
        tot = ai.sum(axis=1, keepdims=True)
        share = np.divide(ai, tot, out=np.zeros_like(ai), where=tot > 0)
        dep = np.stack([share[:, BLOC_OF == b].sum(axis=1) for b in range(len(BLOCS))], axis=1)
        sec = np.array([self.paths.security[BLOC_OF == b].mean() if (BLOC_OF == b).any()
                        else 1.0 for b in range(len(BLOCS))])
        restricted = np.stack([ag.restricted for ag in self.country_agents])
        m = tab.members
        groups = np.stack([m["NATO"], m["EU"], m["BRICS"], m["SCO"]], axis=1)
        allies = (groups.astype(int) @ groups.T.astype(int)) > 0
        np.fill_diagonal(allies, False)
        return {"dependency": dep, "bloc_security": sec, "restricted": restricted,
                "allies": allies, "shock": self.policies.month(self.t)["shock"]}

    def policy_step(self) -> None:
        """Countries' yearly decisions (step 1)."""
        snap = self._snapshot()
        a = self.spec.assumptions
        draws = self.streams.countries(self.date.year).random(
            (len(self.country_agents), Country.N_DRAWS))
        for agent in self.country_agents:
            for act in agent.policy_step(snap, draws[agent.idx]):
                act.update(date=self.date, country=agent.iso3, origin="endogenous")
                self.actions.append(act)
                if act["action"] in ("restrict", "follow_ally"):
                    self.policies.add_restriction(agent.idx, BLOCS.index(act["bloc"]), self.t,
                                                  "endogenous")
                else:
                    self.policies.add_sovereign(agent.idx, self.t, a.sovereign_subsidy)

    def fire_triggers(self) -> None:
        """Scenario triggers: policies that start when a country's dependency passes a level."""
        usage = self.record["usage"][self.t - 1][:, :N_PROVIDERS]
        tot = usage.sum(axis=1, keepdims=True)
        share = np.divide(usage, tot, out=np.zeros_like(usage), where=tot > 0)
        infra = np.stack([share[:, (BLOC_OF == b) & ~IS_OPEN].sum(axis=1)
                          for b in range(len(BLOCS))], axis=1)
        model = np.stack([share[:, (BLOC_OF == b) & IS_OPEN].sum(axis=1)
                          for b in range(len(BLOCS))], axis=1)
        for act in self.policies.fire_triggers(self.t, infra, model):
            act.update(date=self.date, origin="trigger")
            self.actions.append(act)

    def terms(self) -> dict:
        """Environment and country-level utility terms of the current month (steps 2-3).

        Returns arrays over (country, provider) unless noted: ``avail`` (country, sector,
        provider), ``cut``, ``ln_host`` / ``ln_self`` (ln of cost over income, hosted and
        self-hosted), ``cap_req`` (country), ``perf``, ``eco`` (provider), ``peer``, ``trust``,
        ``rest`` (performance + ecosystem + peers, weighted), ``u_none`` (country).
        """
        a = self.spec.assumptions
        t = self.t
        pol = self.policies.month(t)
        paths = self.paths
        avail = paths.released[t][None, None, :] & ~pol["blocked"] & ~pol["cut"]
        price = paths.price[t]
        sub = pol["subsidy"]
        ln_host = np.log(price)[None, :] - self._lninc[:, None]
        ln_self = (np.log(price * a.selfhost_cost_ratio)[None, :]
                   + np.log(self._compute_mult * (1 - sub))[:, None] - self._lninc[:, None])
        perf = -paths.gap[t] / 10
        eco = np.log1p(self.eco_stock[ECO_OF]) * HAS_ECO
        concern = self.countries.data_concern + pol["concern"]
        trust = (self._align - a.w_data * self._api_foreign * concern[:, None]
                 - a.w_security * (1 - paths.security)[None, :] - pol["shock"][:, BLOC_OF])
        return {
            "avail": avail, "cut": pol["cut"], "ln_host": ln_host, "ln_self": ln_self,
            "cap_req": a.selfhost_capacity * (1 - sub), "perf": perf, "eco": eco,
            "peer": self._peer, "trust": trust,
            "rest": (a.b_perf * perf + a.b_eco * eco)[None, :] + a.b_peer * self._peer,
            "u_none": self._none_c - a.none_trend * t / 12.0,
        }

    def step(self) -> None:
        """Advance one month (see the class docstring for the order)."""
        a = self.spec.assumptions
        lev = self.spec.levers
        t = self.t
        d = self.date
        if (d.month == 1 and lev.endogenous_policies and d.year >= a.policy_start_year):
            self.policy_step()
        if self.policies.triggers and t > 0:
            self.fire_triggers()
        terms = self.terms()
        new_cut = terms["cut"] & ~self._prev_cut
        if new_cut.any():
            mark_disrupted(self.firms.country, self.firms.sector, self.firms.current,
                           self.firms.disrupted, new_cut)
        self._prev_cut = terms["cut"]
        paths = self.paths
        released = paths.released[t]
        # 4. firms decide
        u = self.streams.firms(t).random(2 * self.firms.n)
        n_c = self.countries.n
        out_w = np.zeros((n_c, N_PROVIDERS + 1))
        out_self = np.zeros((n_c, N_PROVIDERS))
        out_b = np.zeros(N_PROVIDERS)
        out_d = np.zeros((n_c, 2))
        f = self.firms
        decide(f.country, f.sector, f.weight, f.capacity, f.price_sens, f.trust_sens, f.cust,
               f.switch_mult, f.current, f.tenure, f.disrupted, f.searching, u[: f.n], u[f.n:],
               a.rho, a.migration_rate,
               terms["ln_host"], terms["ln_self"], terms["cap_req"], a.b_cost, terms["rest"],
               terms["trust"], a.b_trust, paths.openness[t], a.b_lic, terms["avail"],
               terms["u_none"], a.switch_cost, a.switch_growth,
               IS_OPEN, out_w, out_self, out_b, out_d)
        # 5. ecosystem
        builders = out_b / self._builder_norm
        new = (a.eco_rate * (builders + a.eco_seed) * paths.openness[t]
               * np.exp(-a.eco_quality * paths.gap[t] / 10) * (IS_OPEN & released))
        self.eco_stock = self.eco_stock + new
        # 6. record
        tot = out_w.sum(axis=1, keepdims=True)
        self._peer = out_w[:, :N_PROVIDERS] / tot
        rec = self.record
        rec["usage"][t] = out_w
        rec["selfhost"][t] = out_self
        rec["builders"][t] = builders
        rec["new_derivatives"][t] = new
        rec["eco_stock"][t] = self.eco_stock
        rec["disrupted"][t] = out_d
        self.t += 1

    def run_model(self) -> None:
        """Run every month of the scenario."""
        while self.t < self.n_months:
            self.step()


def run(scenario: Scenario, seed: int = 1, n_firms: int = DEFAULT_FIRMS):
    """Run a scenario once: the one door used by the CLI, sweeps, calibration, app and tests.

    Args:
        scenario: a validated :class:`~sim.scenario.Scenario`.
        seed: integer >= 0; the same scenario and seed give bit-identical results.
        n_firms: size of the synthetic firm population (1,000 to 2,000,000).

    Returns:
        A :class:`~sim.result.Result` with tidy polars frames and a manifest.
    """
    from sim.result import Result

    t0 = time.perf_counter()
    model = DiffusionModel(scenario, seed, n_firms)
    model.run_model()
    return Result.from_model(model, wall_time=time.perf_counter() - t0)
