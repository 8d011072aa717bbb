"""Calibration: fit the behavioural and ecosystem assumptions to the targets in :mod:`sim.targets`.

Method (``diffusim calibrate``), in three stages on one budget of parameter-set evaluations:

1. **Method of simulated moments.** Every evaluation runs the baseline scenario, cut to end
   2025-12, with the same ``seeds`` (common random numbers, so two parameter sets differ only by
   their parameters) and averages each target statistic over the seeds. The loss is the sum of
   the targets' losses (:mod:`sim.targets`): a Huber loss of the distance to the observed figure
   or interval in tolerance units, weighted by reliability.
2. **Global search.** :func:`scipy.optimize.differential_evolution` (Latin-hypercube start,
   deferred updating, fixed seed, no gradient polish: the simulated loss is piecewise constant at
   the scale of one firm's choice) over the fitted subset :data:`FITTED` in a unit cube (log
   scale for rates and ratios).
3. **Approximate Bayesian computation.** ABC-SMC with MCMC moves (Del Moral, Doucet & Jasra
   2012) under a uniform prior on the same box: the population starts from the best points of
   the search, the tolerance falls generation by generation to the median of the particles'
   losses, particles above it are replaced by resampling, and every particle takes a
   Metropolis-Hastings step that keeps the prior restricted to "loss <= tolerance". The tolerance
   stops at :func:`final_tolerance`, the edge of a 90 % region around the best fit (chi-square
   with one degree of freedom per fitted parameter, tolerances inflated by the misfit); the rest
   of the budget is spent on further moves. The final particles are the posterior: equal-weight
   parameter sets whose medians become the model's defaults. The start is not a prior sample;
   the moves (reported per particle) are what makes the population forget it.

Every evaluation is checkpointed to disk (one file per batch, written atomically); a rerun with
the same settings replays the same deterministic sequence and reads finished evaluations back,
so an interrupted calibration continues where it stopped. Runs go to local processes by default
and to a Dask cluster with ``--scheduler``, through :class:`sim.executor.Executor`.

The output, ``calibration/parameters.json`` (:func:`write_calibration`), holds the posterior
medians (``parameters``, read by :func:`sim.scenario.calibrated_defaults` as the model's
defaults), the posterior sets, the loss, each target's fit and the provenance.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np

from sim.inputs import ROOT, data_hash
from sim.scenario import CALIBRATION_FILE, Assumptions, Scenario, parse_scenario
from sim.targets import Target, build_targets, month_of

FORMAT_VERSION = 1
CALIBRATION_END = date(2025, 12, 1)
DEFAULT_BUDGET = 5000
DEFAULT_SEEDS = 3
DEFAULT_FIRMS = 5000
DEFAULT_PARTICLES = 100
SEARCH_SHARE = 0.5  # share of the budget for the global search; ABC gets the rest
CHECKPOINT_ROOT = ROOT / "results" / "calibration"
BASELINE = ROOT / "scenarios" / "baseline.yaml"
MODEL_FILES = ("model.py", "firms.py", "providers.py", "countries.py", "policies.py",
               "outcomes.py", "scenario.py", "result.py", "inputs.py", "targets.py")


# --------------------------------------------------------------------------------------------
# Parameters


@dataclass(frozen=True)
class FitParam:
    """A fitted assumption: its prior box (uniform; on the log scale when ``log``) and why."""

    name: str
    lo: float
    hi: float
    log: bool
    why: str

    def natural(self, u: float) -> float:
        """Value for a unit-cube coordinate."""
        u = min(max(float(u), 0.0), 1.0)
        if self.log:
            v = math.exp(math.log(self.lo) + u * (math.log(self.hi) - math.log(self.lo)))
        else:
            v = self.lo + u * (self.hi - self.lo)
        return min(max(v, self.lo), self.hi)

    def unit(self, v: float) -> float:
        """Unit-cube coordinate of a value."""
        if self.log:
            return (math.log(v) - math.log(self.lo)) / (math.log(self.hi) - math.log(self.lo))
        return (v - self.lo) / (self.hi - self.lo)


FITTED: tuple[FitParam, ...] = (
    FitParam("rho", 0.005, 0.5, True, "speed of diffusion: adoption growth 2025-06..12 and the "
             "rise of late entrants (DeepSeek, gpt-oss) by 2025"),
    FitParam("none_base", -5.0, 20.0, False, "level of adoption (Microsoft Global North/South); "
             "the prior (-3) makes 'no AI' negligible, so adoption only waits for rho"),
    FitParam("none_trend", 0.0, 5.0, False, "growth of adoption, 2025-06 to 2025-12"),
    FitParam("b_cost", 0.0, 3.0, False, "income gradient of adoption (North/South ratio) and "
             "cheap open weights vs dear APIs (open shares)"),
    FitParam("b_perf", 0.0, 10.0, False, "frontier gap: DeepSeek's rise after R1, Qwen vs "
             "Llama"),
    FitParam("b_trust", 0.0, 10.0, False, "alignment and security: Chinese share outside "
             "China vs DeepSeek's share in China, Belarus, Cuba, Russia"),
    FitParam("b_peer", 0.0, 10.0, False, "concentration within countries (DeepSeek 89 % in "
             "China) and persistence of early leaders"),
    FitParam("w_security", 0.0, 3.0, False, "DeepSeek's measured insecurity (CAISI) vs other "
             "providers: DeepSeek's share of open-model use"),
    FitParam("selfhost_cost_ratio", 0.1, 5.0, True, "open vs closed shares (Menlo 19 % open in "
             "US enterprises; about a third of OpenRouter tokens)"),
    FitParam("eco_rate", 0.1, 50.0, True, "level of the derivative stocks (Qwen > 113k, Llama "
             "~27k, DeepSeek ~6k)"),
    FitParam("eco_seed", 0.001, 1.0, True, "derivatives independent of firm users: sets the "
             "early Chinese share of new derivatives (several Chinese families from 2023)"),
    FitParam("eco_quality", 0.0, 5.0, False, "quality penalty on derivatives: Qwen 1 % of new "
             "derivatives in 2024-01, Chinese share 63 % in 2025-09"),
    FitParam("unmeasured_gap", 0.0, 15.0, False, "quality of providers before their first "
             "measured release (ChatGLM, Qwen-7B, DeepSeek Coder in 2023): early Chinese "
             "shares of downloads and derivatives (2023-11, 2024-01)"),
    FitParam("downloads_deriv_weight", 0.0, 1.0, False, "download shares vs derivative shares "
             "(ATOM, Longpre): the only parameter of the downloads observable"),
)

FIXED_WHY: dict[str, str] = {
    "b_eco": "moves the leading families' shares, as b_peer and eco_rate do; end points cannot "
             "separate them, so it stays at the prior",
    "b_lic": "moves open and Chinese shares (openness x customisation need), as "
             "selfhost_cost_ratio and b_cost do; kept at the prior rather than fitting a ridge",
    "switch_cost": "lock-in: sets how fast shares follow utilities, as rho does; no figure on "
                   "switching or churn, so it stays at the prior",
    "switch_growth": "little effect within 2023-2025 (screen: one target moved)",
    "migration_rate": "acts only on firms that lost their provider to a ban or cut-off",
    "b_internet": "little effect (screen: at most 1.2 tolerances); the North/South ratio is "
                  "fitted through b_cost",
    "w_data": "little effect (screen: at most one tolerance); confounded with b_trust",
    "security_unmeasured": "influential, but a security score is an input: for providers CAISI "
                           "did not evaluate it stays at the CAISI midpoint (maximal "
                           "ignorance) instead of letting market shares set a score nobody "
                           "measured",
    "selfhost_capacity": "little effect (screen: at most 2 tolerances); no figure on "
                         "self-hosting",
    "export_control_gap": "acts after 2025 only (levers)",
    "frontier_growth": "acts after 2025 only",
    "restrict_threshold": "countries decide policies from policy_start_year = 2026",
    "restrict_prob": "as restrict_threshold", "follow_prob": "as restrict_threshold",
    "sovereign_threshold": "as restrict_threshold", "sovereign_prob": "as restrict_threshold",
    "sovereign_subsidy": "as restrict_threshold",
    "policy_start_year": "structural: the data window replays recorded restrictions",
}


def fitted_params(names: Sequence[str] | None = None) -> tuple[FitParam, ...]:
    """The fitted parameters (all, or those named, in declared order)."""
    if names is None:
        return FITTED
    known = {p.name: p for p in FITTED}
    bad = [n for n in names if n not in known]
    if bad:
        raise ValueError(f"unknown fitted parameter(s) {bad}; valid: {', '.join(known)}")
    return tuple(p for p in FITTED if p.name in names)


def common_seeds(seed: int, n: int) -> tuple[int, ...]:
    """``n`` model seeds derived from one calibration seed (the same for every evaluation)."""
    if n < 1:
        raise ValueError(f"seeds: {n} is not allowed; use 1 or more")
    ss = np.random.SeedSequence(entropy=int(seed), spawn_key=(7,))
    return tuple(int(x) for x in ss.generate_state(n, dtype=np.uint32))


def prior_defaults() -> dict[str, object]:
    """Declared (prior) defaults of every assumption, ignoring any calibration file."""
    return {k: f.default for k, f in Assumptions.model_fields.items()}


def base_scenario_data(end: date = CALIBRATION_END, fixed: dict | None = None) -> dict:
    """The baseline scenario as data, cut to ``end``, every assumption set explicitly.

    Assumptions take their declared prior defaults (not the calibration file's values), so a
    calibration does not depend on an earlier one; ``fixed`` overrides some of them.
    """
    from sim.scenario import load_scenario

    data = load_scenario(BASELINE).model_dump(mode="json")
    data["end"] = end.isoformat()
    data["assumptions"] = {**json.loads(json.dumps(prior_defaults(), default=str)),
                           **(fixed or {})}
    return data


# --------------------------------------------------------------------------------------------
# One evaluation (runs in a worker process)

_BASE_CACHE: dict[str, Scenario] = {}


def simulate(base_json: str, values: dict[str, float], seeds: tuple[int, ...],
             n_firms: int) -> np.ndarray:
    """Statistics of every target (columns, :func:`sim.targets.build_targets` order) per seed.

    A pure function of its arguments: it is what the executor sends to workers.
    """
    from sim.model import run
    from sim.targets import statistics

    base = _BASE_CACHE.get(base_json)
    if base is None:
        base = parse_scenario(json.loads(base_json))
        _BASE_CACHE.clear()
        _BASE_CACHE[base_json] = base
    scenario = base.with_values({f"assumptions.{k}": v for k, v in values.items()})
    targets = build_targets()
    return np.stack([statistics(run(scenario, int(s), int(n_firms)), targets) for s in seeds])


def _model_code_hash() -> str:
    digest = hashlib.sha256()
    for name in MODEL_FILES:
        path = ROOT / "sim" / name
        if path.is_file():
            digest.update(name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


@dataclass
class Problem:
    """What one calibration fits: parameters, targets (a subset of all), seeds, firms, base."""

    params: tuple[FitParam, ...]
    targets: tuple[Target, ...]
    seeds: tuple[int, ...]
    n_firms: int
    base: dict

    def __post_init__(self):
        self.all_ids = tuple(t.id for t in build_targets())
        self.columns = np.array([self.all_ids.index(t.id) for t in self.targets], dtype=int)
        self.base_json = json.dumps(self.base, sort_keys=True, default=str)

    @property
    def names(self) -> tuple[str, ...]:
        """Fitted parameter names."""
        return tuple(p.name for p in self.params)

    def values(self, u: np.ndarray) -> dict[str, float]:
        """Natural values for a unit-cube point."""
        return {p.name: p.natural(x) for p, x in zip(self.params, u)}

    def losses(self, stats: np.ndarray) -> np.ndarray:
        """Per-target losses from (seeds, all targets) statistics: MSM on the seed mean."""
        mean = stats[..., self.columns].mean(axis=-2)
        return np.array([float(t.loss(m)) for t, m in zip(self.targets, mean)])

    def loss(self, stats: np.ndarray) -> float:
        """Total loss."""
        return float(self.losses(stats).sum())

    def unit_loss(self) -> float:
        """Expected loss of a correct model: 1 per point target, 1/2 per bound, range, order.

        (With the weight read as a variance factor, a point target's loss is a chi-square with
        one degree of freedom; a bound or range is free on about half of the outcomes.)
        """
        return float(sum(1.0 if t.kind == "point" else 0.5 for t in self.targets))

    def key(self) -> str:
        """Identity of the evaluations (not of the observed values): the checkpoint folder."""
        spec = {"base": self.base_json, "seeds": self.seeds, "firms": self.n_firms,
                "params": [dataclasses.astuple(p)[:4] for p in self.params],
                "targets": self.all_ids, "data": data_hash(), "code": _model_code_hash()}
        return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


class Checkpoint:
    """Finished evaluations on disk: one ``.npz`` per batch, each written atomically.

    The cache maps a parameter vector to its statistics, a pure function of the problem's key
    (base scenario, seeds, firms, targets, data and model code), so any calibration with the
    same key may read it, whatever its seed or budget.
    """

    def __init__(self, folder: Path | None):
        self.folder = folder
        self.done: dict[bytes, np.ndarray] = {}
        self._n = 0
        self._tag = ""
        if folder is None:
            return
        folder.mkdir(parents=True, exist_ok=True)
        for f in sorted(folder.glob("batch-*.npz")):
            try:
                with np.load(f) as z:
                    for x, s in zip(z["x"], z["stats"]):
                        self.done[x.tobytes()] = s
            except (OSError, ValueError, KeyError):  # a damaged file: recompute its runs
                continue
            self._n = max(self._n, int(f.stem.split("-")[1]) + 1)
        self._tag = f"{os.getpid()}-{int(time.time() * 1000) % 100_000_000}"

    def save(self, xs: list[np.ndarray], stats: list[np.ndarray]) -> None:
        """Store a batch of evaluations."""
        for x, s in zip(xs, stats):
            self.done[x.tobytes()] = s
        if self.folder is None or not xs:
            return
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".npz")
        os.close(fd)
        try:
            np.savez(tmp, x=np.stack(xs), stats=np.stack(stats))
            # a unique name: two calibrations sharing a folder never overwrite each other
            os.replace(tmp, self.folder / f"batch-{self._n:06d}-{self._tag}.npz")
            self._n += 1
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)


class Evaluator:
    """Evaluates parameter sets in parallel, reads and writes the checkpoint, counts the budget."""

    FLUSH_EVERY = 16

    def __init__(self, problem: Problem, executor, checkpoint: Checkpoint, progress=None):
        self.problem = problem
        self.executor = executor
        self.checkpoint = checkpoint
        self.progress = progress
        self.used = 0
        self.best = math.inf
        self.log: list[tuple[np.ndarray, np.ndarray, str]] = []  # (unit point, stats, stage)

    def stats(self, U: np.ndarray, stage: str, count: bool = True) -> np.ndarray:
        """Statistics (n, seeds, all targets) for unit-cube points ``U`` (n, d).

        ``count=False`` re-reads points already evaluated without charging the budget.
        """
        U = np.atleast_2d(np.asarray(U, dtype=float))
        xs = [np.array([p.natural(u) for p, u in zip(self.problem.params, row)])
              for row in U]
        keys = [x.tobytes() for x in xs]
        todo = {}
        for i, k in enumerate(keys):
            if k not in self.checkpoint.done and k not in todo:
                todo[k] = i
        if count:
            self._tick(len(keys) - len(todo), stage)
        if todo:
            names = self.problem.names
            tasks = {k: (self.problem.base_json, dict(zip(names, map(float, xs[i]))),
                         self.problem.seeds, self.problem.n_firms) for k, i in todo.items()}
            new_x, new_s = [], []
            failed = []
            for k, value, error in self.executor.map_unordered(simulate, tasks):
                if error is not None:
                    failed.append(error)
                    continue
                new_x.append(xs[todo[k]])
                new_s.append(np.asarray(value, dtype=float))
                self._tick(1, stage)
                if len(new_x) >= self.FLUSH_EVERY:
                    self.checkpoint.save(new_x, new_s)
                    new_x, new_s = [], []
            self.checkpoint.save(new_x, new_s)
            if failed:
                raise RuntimeError(f"{len(failed)} evaluation(s) failed; first: {failed[0]}")
        out = np.stack([self.checkpoint.done[k] for k in keys])
        if not count:
            return out
        self.used += len(keys)
        for u, s in zip(U, out):
            self.log.append((u, s, stage))
            self.best = min(self.best, self.problem.loss(s))
        if self.progress is not None:
            self.progress.set_postfix_str(f"{stage}, best loss {self.best:.1f}")
        return out

    def _tick(self, n: int, stage: str) -> None:
        if self.progress is not None and n:
            self.progress.update(n)


# --------------------------------------------------------------------------------------------
# Stage 2: global search


def search(problem: Problem, ev: Evaluator, budget: int, seed: int,
           popsize: int | None = None) -> dict:
    """Differential evolution over the unit cube; returns the best point and the population."""
    from scipy.optimize import differential_evolution

    d = len(problem.params)
    used0 = ev.used
    popsize = popsize or max(3, min(8, budget // (40 * d)))
    pop = popsize * d
    maxiter = max(0, budget // pop - 1)

    def f(ut: np.ndarray) -> np.ndarray:
        stats = ev.stats(ut.T, "search")
        return np.array([problem.loss(s) for s in stats])

    res = differential_evolution(
        f, [(0.0, 1.0)] * d, popsize=popsize, maxiter=maxiter, rng=np.random.default_rng(seed),
        polish=False, vectorized=True, updating="deferred", init="latinhypercube", tol=0.0,
        atol=0.0, mutation=(0.5, 1.0), recombination=0.7)
    return {"x": np.asarray(res.x), "loss": float(res.fun), "nfev": ev.used - used0,
            "popsize": popsize, "generations": int(res.nit) + 1}


# --------------------------------------------------------------------------------------------
# Stage 3: ABC-SMC


def _weighted_quantile(v: np.ndarray, w: np.ndarray, q) -> np.ndarray:
    order = np.argsort(v, kind="stable")
    v, w = v[order], w[order] / w.sum()
    cw = np.cumsum(w) - 0.5 * w
    return np.interp(q, cw, v)


def final_tolerance(problem: Problem, best: float) -> float:
    """The ABC tolerance at which the sequence stops: a 90 % region around the best fit.

    If the targets' tolerances were standard errors of a correct model, the loss would be a
    chi-square and ``best + chi2_90(d)`` would bound a 90 % region of the d fitted parameters.
    When the model is misspecified (the best loss exceeds :meth:`Problem.unit_loss`, its
    expected value for a correct model), the tolerances are first inflated by
    ``s2 = best / unit_loss``, so that the best fit scores as a correct model would.
    """
    from scipy.stats import chi2

    s2 = max(1.0, best / problem.unit_loss())
    return float(best + s2 * chi2.ppf(0.9, len(problem.params)))


def abc_smc(problem: Problem, ev: Evaluator, budget: int, seed: int,
            n_particles: int = DEFAULT_PARTICLES, alpha: float = 0.5) -> dict:
    """ABC-SMC with MCMC moves (Del Moral, Doucet & Jasra 2012); returns the last population.

    The population starts as the ``n_particles`` best distinct points evaluated by the search.
    Each generation: the tolerance falls to the ``alpha`` quantile of the particles' losses
    (never below :func:`final_tolerance` of the best loss seen); particles above it are replaced
    by resampling (systematic) those below; then every particle takes one Metropolis-Hastings
    step targeting the prior (uniform on the box) restricted to loss <= tolerance: a Gaussian
    step with the particles' covariance times an adaptive scale, kept when inside the box and
    within the tolerance. When the tolerance has reached its floor the remaining budget is
    spent on further moves (mixing). Particles have equal weights throughout.
    """
    rng = np.random.default_rng(np.random.SeedSequence(entropy=int(seed), spawn_key=(11,)))
    d = len(problem.params)
    spent0 = ev.used

    def left() -> int:
        return budget - (ev.used - spent0)

    seen: dict[bytes, tuple[np.ndarray, float]] = {}
    for u, s, _ in ev.log:
        seen.setdefault(u.tobytes(), (u, problem.loss(s)))
    start = sorted(seen.values(), key=lambda t: t[1])[:n_particles]
    if len(start) < 2:
        raise ValueError("ABC needs at least two evaluated points from the search")
    parts = np.array([u for u, _ in start])
    losses = np.array([v for _, v in start])
    if len(parts) < n_particles:
        idx = systematic_resample(np.ones(len(parts)), n_particles, rng)
        parts, losses = parts[idx], losses[idx]
    best = float(losses.min())
    eps = float(losses.max())
    scale = 2.38 ** 2 / d
    moved = np.zeros(n_particles, dtype=int)
    generations = []
    while left() >= n_particles:
        floor = final_tolerance(problem, best)
        eps = max(min(eps, float(np.quantile(losses, alpha))), floor)
        alive = (losses <= eps).astype(float)
        idx = systematic_resample(alive, n_particles, rng)
        parts, losses, moved = parts[idx], losses[idx], moved[idx]
        cov = np.cov(parts.T) + 1e-6 * np.eye(d)
        chol = np.linalg.cholesky(scale * cov)
        prop = parts + rng.standard_normal((n_particles, d)) @ chol.T
        inside = np.all((prop >= 0) & (prop <= 1), axis=1)
        rows = np.flatnonzero(inside)
        accepted = 0
        if rows.size:
            lc = np.array([problem.loss(s) for s in ev.stats(prop[rows], "abc")])
            best = min(best, float(lc.min()))
            ok = lc <= eps
            parts[rows[ok]] = prop[rows[ok]]
            losses[rows[ok]] = lc[ok]
            moved[rows[ok]] += 1
            accepted = int(ok.sum())
        rate = accepted / n_particles
        generations.append({"epsilon": eps, "floor": floor, "evaluated": int(rows.size),
                            "acceptance": rate, "scale": scale,
                            "unique": int(len({p.tobytes() for p in parts}))})
        scale *= 0.6 if rate < 0.15 else (1.5 if rate > 0.35 else 1.0)
    return {"particles": parts, "weights": np.full(n_particles, 1.0 / n_particles),
            "distances": losses, "epsilon": eps, "floor": final_tolerance(problem, best),
            "best": best, "generations": generations, "moves_per_particle": float(moved.mean()),
            "unique": int(len({p.tobytes() for p in parts}))}


def systematic_resample(w: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``k`` equal-weight draws from weights ``w`` (systematic resampling)."""
    c = np.cumsum(w / w.sum())
    c[-1] = 1.0
    pos = (rng.random() + np.arange(k)) / k
    return np.searchsorted(c, pos)


# --------------------------------------------------------------------------------------------
# The whole calibration


@dataclass
class Settings:
    """Settings of one calibration run (all that fixes its result, with the code and data)."""

    budget: int = DEFAULT_BUDGET
    seed: int = 1
    n_seeds: int = DEFAULT_SEEDS
    n_firms: int = DEFAULT_FIRMS
    particles: int = DEFAULT_PARTICLES
    until: date | None = None
    params: tuple[str, ...] | None = None


def make_problem(settings: Settings, targets: Sequence[Target] | None = None,
                 fixed: dict | None = None) -> Problem:
    """The problem for some settings (targets: all those ending by ``until``, unless given)."""
    if targets is None:
        targets = build_targets(settings.until)
    if not targets:
        raise ValueError("no target ends by the chosen --until date")
    return Problem(fitted_params(settings.params), tuple(targets),
                   common_seeds(settings.seed, settings.n_seeds), settings.n_firms,
                   base_scenario_data(fixed=fixed))


def calibrate(settings: Settings, workers: int | None = None, scheduler: str | None = None,
              checkpoint: Path | None | bool = True, progress: bool = True,
              targets: Sequence[Target] | None = None, fixed: dict | None = None) -> dict:
    """Run search and ABC; return the calibration record (see :func:`write_calibration`)."""
    from sim.executor import Executor

    t0 = time.perf_counter()
    problem = make_problem(settings, targets, fixed)
    if checkpoint is True:
        folder = CHECKPOINT_ROOT / problem.key()[:16]
    else:
        folder = checkpoint or None
    cp = Checkpoint(folder)
    search_budget = int(settings.budget * SEARCH_SHARE)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=settings.budget + 1, unit="eval", desc="calibrate", file=sys.stderr,
                   dynamic_ncols=True, mininterval=0.5)
    try:
        with Executor(workers=workers, scheduler=scheduler) as ex:
            ev = Evaluator(problem, ex, cp, bar)
            found = search(problem, ev, search_budget, settings.seed)
            abc_budget = settings.budget - ev.used
            post = abc_smc(problem, ev, abc_budget, settings.seed, settings.particles)
            record = summarise(problem, ev, found, post, settings)
    finally:
        if bar is not None:
            bar.total = bar.n
            bar.refresh()
            bar.close()
    record["wall_time_s"] = round(time.perf_counter() - t0, 1)
    record["checkpoint"] = str(folder) if folder else None
    return record


def summarise(problem: Problem, ev: Evaluator, found: dict, post: dict,
              settings: Settings) -> dict:
    """Posterior medians, sets, predictive bands and per-target fit, as a record."""
    rng = np.random.default_rng(np.random.SeedSequence(entropy=int(settings.seed),
                                                       spawn_key=(13,)))
    parts, w = post["particles"], post["weights"]
    nat = np.array([[p.natural(u) for p, u in zip(problem.params, row)] for row in parts])
    idx = systematic_resample(w, len(parts), rng)
    draws = nat[idx]
    medians = {p.name: float(_weighted_quantile(nat[:, j], w, 0.5))
               for j, p in enumerate(problem.params)}
    intervals = {p.name: [float(v) for v in _weighted_quantile(nat[:, j], w, [0.05, 0.5, 0.95])]
                 for j, p in enumerate(problem.params)}
    # the medians' run (the model's new defaults)
    u_med = np.array([[p.unit(medians[p.name]) for p in problem.params]])
    med_stats = ev.stats(u_med, "median")[0]
    med_losses = problem.losses(med_stats)
    # posterior predictive: every (resampled) particle x every seed
    part_stats = ev.stats(parts, "abc", count=False)  # evaluated during ABC
    pred = part_stats[idx]  # (k, seeds, all targets)
    fits = target_fit(problem.targets, pred.reshape(-1, pred.shape[-1])[:, problem.columns],
                      med_losses)
    sig = lambda v: float(f"{v:.6g}")  # noqa: E731 - readable rounding
    return {
        "format_version": FORMAT_VERSION,
        "parameters": {k: sig(v) for k, v in medians.items()},
        "posterior": [{p.name: sig(v) for p, v in zip(problem.params, row)} for row in draws],
        "loss": float(med_losses.sum()),
        "targets": fits,
        "n_targets": len(fits),
        "n_within": int(sum(f["within"] for f in fits)),
        "intervals_90": intervals,
        "prior": {p.name: {"lo": p.lo, "hi": p.hi, "scale": "log" if p.log else "linear",
                           "why": p.why} for p in problem.params},
        "fixed": {**{k: {"value": prior_defaults()[k], "why": v} for k, v in FIXED_WHY.items()
                     if k in Assumptions.model_fields},
                  **{p.name: {"value": prior_defaults()[p.name], "why": "not in --params"}
                     for p in FITTED if p not in problem.params}},
        "search": {"best": {p.name: sig(p.natural(u)) for p, u in zip(problem.params,
                                                                      found["x"])},
                   "best_loss": found["loss"], "evaluations": found["nfev"],
                   "popsize": found["popsize"], "generations": found["generations"]},
        "abc": {"epsilon": post["epsilon"], "final_tolerance": post["floor"],
                "best_loss": post["best"], "unit_loss": problem.unit_loss(),
                "generations": post["generations"], "particles": len(parts),
                "unique": post["unique"], "moves_per_particle": post["moves_per_particle"]},
        "data_hash": data_hash(),
        "method": ("method of simulated moments (common seeds), differential evolution, "
                   "ABC-SMC (population Monte Carlo, adaptive tolerance)"),
        "budget": settings.budget,
        "evaluations": ev.used,
        "seed": settings.seed,
        "seeds": list(problem.seeds),
        "n_firms": settings.n_firms,
        "until": settings.until.isoformat() if settings.until else CALIBRATION_END.isoformat(),
        "date": date.today().isoformat(),
        "package_version": _package_version(),
        "model_code_hash": _model_code_hash()[:16],
    }


def target_fit(targets: Sequence[Target], pred: np.ndarray,
               losses: np.ndarray | None = None) -> list[dict]:
    """Per-target rows: observed, simulated median and 90 % band, within, loss."""
    rows = []
    for j, t in enumerate(targets):
        v = pred[:, j]
        q5, q50, q95 = (float(x) for x in np.quantile(v, [0.05, 0.5, 0.95]))
        rows.append({
            "id": t.id, "kind": t.kind, "scale": t.scale, "observed": t.observed,
            "observed_lo": t.lo, "observed_hi": t.hi, "tolerance": t.tolerance,
            "weight": t.weight, "reliability": t.reliability,
            "date": month_of(t.window[1]).strftime("%Y-%m"),
            "simulated_median": q50, "band_5": q5, "band_95": q95,
            "within": bool(t.within(q50)),
            "loss": float(losses[j]) if losses is not None else float(t.loss(q50)),
            "output": t.output,
        })
    return rows


def _package_version() -> str:
    from sim.result import package_version

    return package_version()


def write_calibration(record: dict, path: Path = CALIBRATION_FILE) -> Path:
    """Write the calibration file atomically (it appears whole or not at all)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(record, fh, indent=1, sort_keys=False, default=str)
            fh.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def read_calibration(path: Path = CALIBRATION_FILE) -> dict:
    """Read and check a calibration file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no calibration file; run `diffusim calibrate`")
    data = json.loads(path.read_text())
    if data.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {data.get('format_version')!r}; this version "
                         f"reads {FORMAT_VERSION}")
    for key in ("parameters", "posterior", "targets"):
        if key not in data:
            raise ValueError(f"{path}: missing {key!r}")
    return data


def posterior_scenarios(scenario: Scenario, k: int, seed: int = 0,
                        path: Path = CALIBRATION_FILE) -> list[Scenario]:
    """``k`` copies of ``scenario`` with fitted assumptions drawn from the posterior.

    For uncertainty bands: run each (with the same model seed, or one each) and take quantiles.
    Draws are without replacement while ``k`` does not exceed the posterior size. Only fitted
    assumptions still at their calibrated default (the file's ``parameters``) take the draw's
    value, so an assumption the scenario sets deliberately stays as set; levers and events are
    unchanged.
    """
    if k < 1:
        raise ValueError(f"k: {k} is not allowed; use 1 or more")
    data = read_calibration(path)
    post = data["posterior"]
    rng = np.random.default_rng(np.random.SeedSequence(entropy=int(seed), spawn_key=(17,)))
    idx = rng.choice(len(post), size=k, replace=k > len(post))
    medians = data["parameters"]
    free = [n for n in medians if n in Assumptions.model_fields
            and math.isclose(float(getattr(scenario.assumptions, n)), float(medians[n]),
                             rel_tol=1e-9, abs_tol=1e-12)]
    return [scenario.with_values({f"assumptions.{n}": post[i][n] for n in free if n in post[i]})
            for i in idx]


# --------------------------------------------------------------------------------------------
# Validation: parameter recovery and out-of-sample


def synthetic_targets(targets: Sequence[Target], stats: np.ndarray) -> tuple[Target, ...]:
    """Targets whose observed figures are replaced by simulated statistics (same kinds).

    A point becomes the simulated value; a bound or an ordering is placed at the simulated value
    (the truth lies on its edge); a range keeps its width on the target's scale, centred there.
    """
    out = []
    for t, s in zip(targets, stats):
        s = float(s)
        if t.kind == "range":
            half = 0.5 * float(t.transform(t.hi) - t.transform(t.lo))
            z = float(t.transform(s))
            lo, hi = _untransform(t, z - half), _untransform(t, z + half)
        else:
            lo = hi = s
        out.append(dataclasses.replace(t, lo=lo, hi=hi))
    return tuple(out)


def _untransform(t: Target, z: float) -> float:
    if t.scale == "log":
        return math.exp(z)
    if t.scale == "logit":
        return 1 / (1 + math.exp(-z))
    return z


def recovery(settings: Settings, truths: int = 3, workers: int | None = None,
             scheduler: str | None = None, progress: bool = True,
             truth_sets: list[dict] | None = None) -> dict:
    """Fit synthetic data made by the model at known parameters; check 90 % coverage.

    True parameter sets are posterior draws from the calibration file (the region that matters)
    or, without a file, points of a Latin hypercube over the prior box. Synthetic observations are
    made with seeds other than the fit's, so the fit faces the simulator's noise as with data.
    """
    from sim.executor import Executor

    params = fitted_params(settings.params)
    if truth_sets is None:
        rng = np.random.default_rng(np.random.SeedSequence(entropy=settings.seed,
                                                           spawn_key=(19,)))
        if CALIBRATION_FILE.is_file():
            post = read_calibration()["posterior"]
            pick = rng.choice(len(post), size=truths, replace=False)
            truth_sets = [{p.name: post[i][p.name] for p in params} for i in pick]
        else:
            from scipy.stats import qmc

            pts = qmc.LatinHypercube(d=len(params), rng=rng).random(truths)
            truth_sets = [{p.name: p.natural(0.15 + 0.7 * u) for p, u in zip(params, row)}
                          for row in pts]
    all_targets = build_targets(settings.until)
    base = base_scenario_data()
    other_seeds = common_seeds(settings.seed + 100_000, settings.n_seeds)
    runs = []
    with Executor(workers=workers, scheduler=scheduler) as ex:
        tasks = {i: (json.dumps(base, sort_keys=True, default=str), truth, other_seeds,
                     settings.n_firms) for i, truth in enumerate(truth_sets)}
        made = {k: v for k, v, err in ex.map_unordered(simulate, tasks) if err is None}
    ids = [t.id for t in build_targets()]
    cols = [ids.index(t.id) for t in all_targets]
    for i, truth in enumerate(truth_sets):
        synth = synthetic_targets(all_targets, made[i].mean(axis=0)[cols])
        s_i = dataclasses.replace(settings, seed=settings.seed + i)
        rec = calibrate(s_i, workers, scheduler, checkpoint=True, progress=progress,
                        targets=synth)
        cover = {}
        for p in params:
            q5, q50, q95 = rec["intervals_90"][p.name]
            cover[p.name] = {"truth": truth[p.name], "q5": q5, "median": q50, "q95": q95,
                             "inside": bool(q5 <= truth[p.name] <= q95),
                             "width_share": (p.unit(q95) - p.unit(q5)) if q95 > 0 or not p.log
                             else None}
        runs.append({"truth": truth, "coverage": cover, "loss": rec["loss"],
                     "n_within": rec["n_within"], "n_targets": rec["n_targets"],
                     "wall_time_s": rec["wall_time_s"]})
    inside = [c["inside"] for r in runs for c in r["coverage"].values()]
    return {"truths": runs, "coverage_90": float(np.mean(inside)), "n_checks": len(inside),
            "settings": _settings_dict(settings)}


def out_of_sample(settings: Settings, until: date, workers: int | None = None,
                  scheduler: str | None = None, progress: bool = True) -> dict:
    """Fit on targets ending by ``until``; predict the later targets with the posterior."""
    from sim.executor import Executor

    s_fit = dataclasses.replace(settings, until=until)
    rec = calibrate(s_fit, workers, scheduler, checkpoint=True, progress=progress)
    later = tuple(t for t in build_targets() if t.end > until)
    if not later:
        raise ValueError(f"no target ends after {until}")
    problem = make_problem(dataclasses.replace(settings, until=None), later)
    post = rec["posterior"]
    tasks = {i: (problem.base_json, draw, problem.seeds, problem.n_firms)
             for i, draw in enumerate(post)}
    with Executor(workers=workers, scheduler=scheduler) as ex:
        res = {k: v for k, v, err in ex.map_unordered(simulate, tasks) if err is None}
    pred = np.stack([res[i] for i in sorted(res)])[..., problem.columns]
    med_task = simulate(problem.base_json, rec["parameters"], problem.seeds, problem.n_firms)
    losses = problem.losses(med_task)
    fits = target_fit(later, pred.reshape(-1, pred.shape[-1]), losses)
    for f, t in zip(fits, later):
        f["error"] = float(t.transform(f["simulated_median"]) - t.transform(t.observed)) \
            if t.kind == "point" else None
        f["distance_in_tolerances"] = float(t.distance(f["simulated_median"]) / t.tolerance)
    return {"until": until.isoformat(), "fit": {k: rec[k] for k in (
        "parameters", "intervals_90", "loss", "n_within", "n_targets", "wall_time_s")},
        "fit_targets": rec["targets"], "predicted": fits,
        "n_within": int(sum(f["within"] for f in fits)), "n_targets": len(fits),
        "loss": float(losses.sum()), "settings": _settings_dict(settings)}


def _settings_dict(s: Settings) -> dict:
    d = dataclasses.asdict(s)
    d["until"] = s.until.isoformat() if s.until else None
    return d


def screen(n_trajectories: int = 10, n_firms: int = 3000, seed: int = 1,
           workers: int | None = None, scheduler: str | None = None) -> dict:
    """Morris elementary effects of candidate assumptions on every target (tolerance units).

    The candidates are the fitted parameters and the fixed ones that act within 2023-2025. For
    each, ``moved`` counts the targets whose mean absolute elementary effect is at least one
    tolerance; this is the screen that chose :data:`FITTED`.
    """
    from SALib.analyze import morris as morris_analyze
    from SALib.sample import morris as morris_sample

    from sim.executor import Executor

    cand = list(FITTED) + [
        FitParam(n, _bound(n, "ge"), _bound(n, "le"), False, "fixed")
        for n in ("b_eco", "b_lic", "switch_cost", "switch_growth", "b_internet", "w_data",
                  "security_unmeasured", "selfhost_capacity")]
    names = [p.name for p in cand]
    problem = {"num_vars": len(cand), "names": names, "bounds": [[0.0, 1.0]] * len(cand)}
    X = morris_sample.sample(problem, n_trajectories, num_levels=4, seed=seed)
    targets = build_targets()
    base = json.dumps(base_scenario_data(), sort_keys=True, default=str)
    seeds = common_seeds(seed, 2)
    tasks = {i: (base, {p.name: p.natural(u) for p, u in zip(cand, row)}, seeds, n_firms)
             for i, row in enumerate(X)}
    with Executor(workers=workers, scheduler=scheduler) as ex:
        res = {k: v for k, v, err in ex.map_unordered(simulate, tasks) if err is None}
    Z = np.array([[float(t.transform(s) / t.tolerance) for t, s in
                   zip(targets, res[i].mean(axis=0))] for i in range(len(X))])
    mu = np.array([morris_analyze.analyze(problem, X, Z[:, k], num_levels=4, seed=seed)
                   ["mu_star"] for k in range(Z.shape[1])])
    return {"parameters": {n: {"moved": int((mu[:, j] >= 1).sum()),
                               "max_effect": float(mu[:, j].max()),
                               "fitted": n in {p.name for p in FITTED}}
                           for j, n in enumerate(names)},
            "n_targets": len(targets), "trajectories": n_trajectories, "n_firms": n_firms}


def _bound(name: str, which: str) -> float:
    for m in Assumptions.model_fields[name].metadata:
        if hasattr(m, which):
            return float(getattr(m, which))
    raise ValueError(f"{name} has no {which} bound")


# --------------------------------------------------------------------------------------------
# Command line


def _month(text: str) -> date:
    import argparse

    try:
        y, m = text.split("-")[:2]
        d = date(int(y), int(m), 1)
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a month (YYYY-MM)") from None
    if not (date(2023, 1, 1) <= d <= CALIBRATION_END):
        raise argparse.ArgumentTypeError(f"{text}: use a month from 2023-01 to 2025-12")
    return d


def _settings_from(args) -> Settings:
    return Settings(budget=args.budget, seed=args.seed, n_seeds=args.seeds, n_firms=args.firms,
                    particles=args.particles, until=getattr(args, "until", None),
                    params=tuple(args.params.split(",")) if args.params else None)


def _print_targets(rows: list[dict], file=None) -> None:
    file = file or sys.stdout
    print(f"{'target':34s} {'kind':6s} {'observed':>16s} {'sim median':>10s} "
          f"{'90% band':>19s} {'within':>6s} {'loss':>7s}", file=file)
    for r in rows:
        obs = (f"{r['observed']:.3g}" if r["kind"] not in ("range",) else
               f"[{r['observed_lo']:.3g},{r['observed_hi']:.3g}]")
        if r["kind"] == "lower":
            obs = ">= " + obs
        elif r["kind"] == "upper":
            obs = "<= " + obs
        elif r["kind"] == "order":
            obs = "ratio >= " + obs
        band = f"[{r['band_5']:.3g}, {r['band_95']:.3g}]"
        print(f"{r['id']:34s} {r['kind']:6s} {obs:>16s} {r['simulated_median']:>10.3g} "
              f"{band:>19s} {'yes' if r['within'] else 'no':>6s} {r['loss']:>7.2f}", file=file)


def _cmd_calibrate(args) -> int:
    from sim.cli import UsageError

    settings = _settings_from(args)
    if settings.budget < 4 * settings.particles:
        raise UsageError(f"--budget: {settings.budget} is too small for {settings.particles} "
                         f"particles; use at least {4 * settings.particles}")
    record = calibrate(settings, args.workers, args.scheduler,
                       checkpoint=Path(args.checkpoint) if args.checkpoint else True,
                       progress=not args.no_progress)
    out = Path(args.out) if args.out else (
        CALIBRATION_FILE if settings.until is None else
        ROOT / "results" / f"calibration-until-{settings.until:%Y-%m}.json")
    write_calibration(record, out)
    _print_targets(record["targets"])
    print(f"\n{record['n_within']} of {record['n_targets']} targets within their uncertainty; "
          f"loss at the posterior medians {record['loss']:.2f} (search best "
          f"{record['search']['best_loss']:.2f}); {record['evaluations']} evaluations x "
          f"{len(record['seeds'])} seeds in {record['wall_time_s']:.0f} s")
    print("posterior medians [90% interval]:")
    for name, (q5, q50, q95) in record["intervals_90"].items():
        print(f"  {name:24s} {q50:9.4g}  [{q5:.4g}, {q95:.4g}]")
    print(f"wrote {out}")
    return 0


def _cmd_report(args) -> int:
    from sim.calibration_report import report

    report(Path(args.file), Path(args.out) if args.out else None, draws=args.draws,
           n_firms=args.firms, workers=args.workers)
    return 0


def _cmd_validate(args) -> int:
    from sim.cli import UsageError

    settings = _settings_from(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not (args.recovery or args.out_of_sample or args.screen):
        raise UsageError("validate-calibration: choose --recovery, --out-of-sample or --screen")
    if args.screen:
        res = screen(n_firms=min(settings.n_firms, 3000), seed=settings.seed,
                     workers=args.workers, scheduler=args.scheduler)
        write_calibration(res, out / "screen.json")
        for n, v in sorted(res["parameters"].items(), key=lambda kv: -kv[1]["moved"]):
            print(f"  {n:24s} moves {v['moved']:2d} targets by >= 1 tolerance (max "
                  f"{v['max_effect']:.1f}); {'fitted' if v['fitted'] else 'fixed'}")
    if args.recovery:
        res = recovery(settings, truths=args.truths, workers=args.workers,
                       scheduler=args.scheduler, progress=not args.no_progress)
        write_calibration(res, out / "recovery.json")
        for i, r in enumerate(res["truths"]):
            n_in = sum(c["inside"] for c in r["coverage"].values())
            print(f"truth {i}: {n_in} of {len(r['coverage'])} parameters inside the 90% "
                  f"interval; {r['n_within']} of {r['n_targets']} targets within")
            for n, c in r["coverage"].items():
                print(f"   {n:24s} true {c['truth']:9.4g}  median {c['median']:9.4g}  "
                      f"[{c['q5']:.4g}, {c['q95']:.4g}] {'in' if c['inside'] else 'OUT'}")
        print(f"coverage of 90% intervals: {res['coverage_90']:.0%} of {res['n_checks']}")
    if args.out_of_sample:
        res = out_of_sample(settings, args.until or date(2025, 6, 1), workers=args.workers,
                            scheduler=args.scheduler, progress=not args.no_progress)
        write_calibration(res, out / "out_of_sample.json")
        print(f"fitted on {res['fit']['n_targets']} targets ending by {res['until']}: "
              f"{res['fit']['n_within']} within")
        _print_targets(res["predicted"])
        print(f"out of sample: {res['n_within']} of {res['n_targets']} later targets within "
              f"their uncertainty; loss {res['loss']:.2f}")
    return 0


def _common(p, budget: int) -> None:
    from sim.cli import positive_int

    p.add_argument("--budget", type=positive_int("--budget", 10), default=budget,
                   help=f"parameter sets to evaluate in all (default {budget})")
    p.add_argument("--workers", type=positive_int("--workers"), default=None,
                   help="local processes (default: every core)")
    p.add_argument("--scheduler", default=None, help="Dask scheduler address (tcp://host:port)")
    p.add_argument("--seed", type=positive_int("--seed", 0), default=1)
    p.add_argument("--seeds", type=positive_int("--seeds", 1, 64), default=DEFAULT_SEEDS,
                   help=f"model seeds per evaluation, common to all (default {DEFAULT_SEEDS})")
    p.add_argument("--firms", type=positive_int("--firms", 1000, 2_000_000),
                   default=DEFAULT_FIRMS)
    p.add_argument("--particles", type=positive_int("--particles", 10, 2000),
                   default=DEFAULT_PARTICLES, help="ABC population size")
    p.add_argument("--params", default=None,
                   help="comma-separated subset of the fitted parameters (default: all)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(sub) -> None:
    """Commands: calibrate, report calibration, validate-calibration."""
    p = sub.add_parser("calibrate", help="fit the behavioural and ecosystem assumptions to the "
                       "Hugging Face, OpenRouter and Microsoft figures (MSM + DE + ABC-SMC)")
    _common(p, DEFAULT_BUDGET)
    p.add_argument("--until", type=_month, default=None,
                   help="fit only targets ending by this month (YYYY-MM); written to "
                   "results/calibration-until-YYYY-MM.json unless --out")
    p.add_argument("--out", default=None, help="output file (default calibration/parameters."
                   "json)")
    p.add_argument("--checkpoint", default=None, help="checkpoint folder (default results/"
                   "calibration/<key>); a rerun with the same settings resumes")
    p.set_defaults(func=_cmd_calibrate)

    p = sub.add_parser("report", help="reports on model results")
    rsub = p.add_subparsers(dest="report", required=True)
    r = rsub.add_parser("calibration", help="fit table and plots for a calibration file")
    r.add_argument("--file", default=str(CALIBRATION_FILE))
    r.add_argument("--out", default=None, help="folder for the PNG plots (default: none)")
    r.add_argument("--draws", type=int, default=40, help="posterior draws to simulate for the "
                   "plots")
    r.add_argument("--firms", type=int, default=None, help="firms per run (default: the file's)")
    r.add_argument("--workers", type=int, default=None)
    r.set_defaults(func=_cmd_report)

    p = sub.add_parser("validate-calibration", help="parameter recovery on synthetic data, "
                       "out-of-sample check, or the parameter screen")
    _common(p, DEFAULT_BUDGET)
    p.add_argument("--recovery", action="store_true")
    p.add_argument("--truths", type=int, default=3, help="true parameter sets for --recovery")
    p.add_argument("--out-of-sample", action="store_true")
    p.add_argument("--until", type=_month, default=None,
                   help="last month fitted in --out-of-sample (default 2025-06)")
    p.add_argument("--screen", action="store_true", help="Morris screen of the candidates")
    p.add_argument("--out", default=str(ROOT / "results" / "validation"))
    p.set_defaults(func=_cmd_validate)
