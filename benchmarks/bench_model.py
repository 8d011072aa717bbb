"""Benchmark diffusim: the full model, the app's default run, and a naive Mesa firm step.

Run from the repository root::

    .venv/bin/python benchmarks/bench_model.py            # full table, about a minute
    .venv/bin/python benchmarks/bench_model.py --quick    # fewer repeats, no 1M run, ~20 s

Every case runs in a fresh subprocess pinned to one CPU core (peak memory is that
subprocess's ``ru_maxrss``), after one untimed warm-up that compiles or loads the numba
kernel. See benchmarks/README.md for what each case measures and how to read the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "baseline.yaml"
FRAMES = ("adoption", "observables", "dependency", "ecosystem", "kpis", "policies", "cutoff")
SEED = 1

# targets from the performance brief
TARGET_100K_S = 1.5
TARGET_APP_S = 0.3
TARGET_1M_MB = 2048
TARGET_RATIO = 40

# (label, n_firms, repeats, quick repeats); quick mode skips sizes with 0 quick repeats
FULL_CASES = [
    ("full model + all frames", 10_000, 5, 2),
    ("full model + all frames", 100_000, 5, 2),
    ("full model + all frames", 1_000_000, 3, 0),
    ("app default: model + all frames", 20_000, 5, 2),
]
NAIVE_FIRMS = 10_000
NAIVE_START = 36  # replay from 2026-01: firms have providers and tenure; countries' own bans bite
NAIVE_MONTHS, NAIVE_MONTHS_QUICK = 6, 3
NAIVE_REPEATS, NAIVE_REPEATS_QUICK = 3, 1
KERNEL_REPEATS = 50


# --------------------------------------------------------------------------------------------
# workers (run in a fresh, single-core subprocess)
# --------------------------------------------------------------------------------------------

def _check(ok, msg: str) -> None:
    """Like assert, but not stripped by ``python -O``."""
    if not ok:
        raise AssertionError(msg)


def _peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def worker_full(n_firms: int, repeats: int) -> dict:
    """Median wall time of ``run`` + building every frame, and the process's peak memory."""
    from sim import load_scenario, run

    scenario = load_scenario(SCENARIO)
    t0 = time.perf_counter()
    warm = run(scenario, SEED, 1_000)  # compiles or loads the numba cache, fills lru caches
    for name in FRAMES:
        getattr(warm, name)
    warmup_s = time.perf_counter() - t0
    del warm
    rss_after_warmup = _peak_mb()
    total, model_s, frames_s = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = run(scenario, SEED, n_firms)
        t1 = time.perf_counter()
        for name in FRAMES:
            getattr(result, name)
        t2 = time.perf_counter()
        total.append(t2 - t0)
        model_s.append(t1 - t0)
        frames_s.append(t2 - t1)
        months = result.manifest["months"]
        del result
    return {"seconds": total, "model_s": model_s, "frames_s": frames_s, "months": months,
            "firms": n_firms, "warmup_s": warmup_s, "rss_after_warmup_mb": rss_after_warmup,
            "peak_mb": _peak_mb()}


def _naive_classes():
    import mesa
    import numpy as np

    class NaiveFirm(mesa.Agent):
        """One firm as one Mesa agent; ``step`` is the kernel's logic for this firm only."""

        def __init__(self, model, i, pop):
            super().__init__(model)
            self.i = i  # index into the month's uniforms (the firm's own random draws)
            self.country = int(pop["country"][i])
            self.sector = int(pop["sector"][i])
            self.weight = float(pop["weight"][i])
            self.capacity = float(pop["capacity"][i])
            self.price_sens = float(pop["price_sens"][i])
            self.trust_sens = float(pop["trust_sens"][i])
            self.cust = float(pop["cust"][i])
            self.switch_mult = float(pop["switch_mult"][i])
            self.current = int(pop["current"][i])
            self.tenure = int(pop["tenure"][i])
            self.disrupted = bool(pop["disrupted"][i])
            self.searching = bool(pop["searching"][i])

        def step(self):
            e = self.model.env  # this month's country-level arrays, as the real model made them
            c, s, cur = self.country, self.sector, self.current
            none = e["n_p"]
            avail = e["avail"][c, s]
            if cur < none and not avail[cur]:
                # provider banned or cut off: lost; the firm searches from next month
                self.current = none
                self.tenure = 0
                self.searching = True
            elif e["u_reconsider"][self.i] < (e["migration_rate"] if self.searching
                                              else e["rho"]):
                sc = 0.0
                if cur < none:
                    ten = min(self.tenure, 60)
                    sc = e["switch_cost"] * self.switch_mult * (1.0 + e["switch_growth"] * ten
                                                                / 12.0)
                lc = e["lncost_host"][c].copy()
                if self.capacity >= e["capacity_req"][c]:
                    cheaper = e["is_open"] & (e["lncost_self"][c] < lc)
                    lc[cheaper] = e["lncost_self"][c][cheaper]
                # same terms, same order of operations as the kernel (bit-identical utilities)
                util = (-e["b_cost"] * self.price_sens * lc + e["rest"][c]
                        + e["b_trust"] * e["trust"][c] * self.trust_sens
                        + e["b_lic"] * e["lic"] * self.cust)
                if cur < none:
                    keep = util[cur]
                    util -= sc  # switching cost on every option but the current provider
                    util[cur] = keep
                u0 = e["u_none"][c] - sc
                util = np.append(np.where(avail, util, -np.inf), u0)
                weights = np.exp(util - util.max())  # unavailable: exp(-inf) = 0
                cum = np.cumsum(weights)  # sequential, like the kernel's running sum
                target = e["u_choice"][self.i] * cum[-1]
                pos = weights > 0.0
                hit = np.flatnonzero(pos & (cum >= target))
                choice = int(hit[0]) if hit.size else int(np.flatnonzero(pos)[-1])
                if choice != cur:
                    self.current = choice
                    self.tenure = 0
                else:
                    self.tenure += 1
                if choice < none:
                    self.searching = False
            else:
                self.tenure += 1
            # the month's tallies, as the kernel keeps them
            m = self.model
            cur = self.current
            w = self.weight
            m.out_w[c, cur] += w
            if cur < none and e["is_open"][cur]:
                m.out_builders[cur] += w * self.cust
                if (self.capacity >= e["capacity_req"][c]
                        and e["lncost_self"][c, cur] < e["lncost_host"][c, cur]):
                    m.out_self[c, cur] += w
            if self.disrupted:
                m.out_disrupted[c, 1] += w
                if cur < none:
                    m.out_disrupted[c, 0] += w

    class NaiveModel(mesa.Model):
        """Firms only, one agent each, stepped in random order."""

        def __init__(self, pop, seed):
            super().__init__(rng=seed)
            self.env = None
            for i in range(len(pop["country"])):
                NaiveFirm(self, i, pop)
            self.firms = sorted(self.agents, key=lambda a: a.i)

        def set_month(self, env, disrupted):
            """Install a month's country-level arrays; fresh tallies; cut-off flags (untimed)."""
            self.env = env
            self.out_w = np.zeros_like(env["out_w"])
            self.out_self = np.zeros_like(env["out_self"])
            self.out_builders = np.zeros_like(env["out_builders"])
            self.out_disrupted = np.zeros_like(env["out_disrupted"])
            for i in np.flatnonzero(disrupted):
                self.firms[i].disrupted = True

        def step(self):
            self.agents.shuffle_do("step")

    return NaiveModel


def _capture_months(n_firms: int, start: int, months: int) -> list[dict]:
    """Run a real DiffusionModel and record ``decide``'s arguments and results for some months.

    ``sim.model.decide`` is wrapped (and restored) so that the country-level arrays are exactly
    those the model computes; nothing in the model is duplicated here.
    """
    import inspect

    import numpy as np

    import sim.model
    from sim import load_scenario

    real = sim.model.decide
    sig = inspect.signature(real.py_func)
    captured: list[dict] = []
    model = sim.model.DiffusionModel(load_scenario(SCENARIO), SEED, n_firms)

    def spy(*args, **kwargs):
        want = start <= model.t < start + months
        got = sig.bind(*args, **kwargs).arguments
        if want:
            pre = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in got.items()}
        out = real(*args, **kwargs)
        if want:
            pre["after"] = {k: got[k].copy() for k in ("current", "tenure", "searching", "out_w",
                                                       "out_self", "out_builders",
                                                       "out_disrupted")}
            captured.append(pre)
        return out

    sim.model.decide = spy
    try:
        while model.t < start + months:
            model.step()
    finally:
        sim.model.decide = real
    return captured


def worker_naive(n_firms: int, months: int, repeats: int, kernel_repeats: int) -> dict:
    """Naive Mesa firm step vs the numba kernel, same months, same state, same uniforms."""
    import numpy as np

    from sim.firms import decide

    t0 = time.perf_counter()
    cap = _capture_months(n_firms, NAIVE_START, months)  # also warms up numba
    capture_s = time.perf_counter() - t0
    first = cap[0]
    pop_keys = ("country", "sector", "weight", "capacity", "price_sens", "trust_sens", "cust",
                "switch_mult", "current", "tenure", "disrupted", "searching")
    pop = {k: first[k] for k in pop_keys}
    envs = []
    for m in cap:
        env = {k: v for k, v in m.items() if k not in pop_keys and k != "after"}
        env["n_p"] = m["rest"].shape[1]
        envs.append(env)
    NaiveModel = _naive_classes()

    # naive Mesa: one agent per firm, model.agents.shuffle_do("step")
    naive_s = []
    decisions = 0
    for rep in range(repeats):
        nm = NaiveModel(pop, SEED + rep)
        elapsed = 0.0
        for k, m in enumerate(cap):
            nm.set_month(envs[k], m["disrupted"])
            t0 = time.perf_counter()
            nm.step()
            elapsed += time.perf_counter() - t0
            cur = np.array([a.current for a in nm.firms], dtype=np.int32)
            ten = np.array([a.tenure for a in nm.firms], dtype=np.int32)
            search = np.array([a.searching for a in nm.firms], dtype=np.bool_)
            after = m["after"]
            _check(np.array_equal(cur, after["current"]),
                   f"month {NAIVE_START + k}: naive Mesa chose differently from the kernel for "
                   f"{int((cur != after['current']).sum())} firms")
            _check(np.array_equal(ten, after["tenure"])
                   and np.array_equal(search, after["searching"]),
                   f"month {NAIVE_START + k}: tenure or searching state differs")
            for name in ("out_w", "out_self", "out_builders", "out_disrupted"):
                _check(np.allclose(getattr(nm, name), after[name], rtol=1e-9, atol=0),
                       f"month {NAIVE_START + k}: tally {name}")
            decisions += 0 if rep else n_firms
        naive_s.append(elapsed)
        del nm

    # the numba kernel on the same state and uniforms
    kernel_s = []
    for _ in range(kernel_repeats):
        current = first["current"].copy()
        tenure = first["tenure"].copy()
        searching = first["searching"].copy()
        calls = []
        for m in cap:
            args = {**{k: v for k, v in m.items() if k != "after"},
                    "current": current, "tenure": tenure, "searching": searching,
                    "out_w": np.zeros_like(m["out_w"]), "out_self": np.zeros_like(m["out_self"]),
                    "out_builders": np.zeros_like(m["out_builders"]),
                    "out_disrupted": np.zeros_like(m["out_disrupted"])}
            calls.append(args)
        t0 = time.perf_counter()
        for args in calls:
            decide(**args)
        kernel_s.append(time.perf_counter() - t0)
        _check(np.array_equal(current, cap[-1]["after"]["current"])
               and np.array_equal(tenure, cap[-1]["after"]["tenure"])
               and np.array_equal(searching, cap[-1]["after"]["searching"]),
               "kernel replay differs from the model's own month")
    reconsidered = sum(int((m["u_reconsider"] < m["rho"]).sum()) for m in cap)
    lost = 0
    for m in cap:
        cur, n_p = m["current"], m["rest"].shape[1]
        ok = m["avail"][m["country"], m["sector"], np.minimum(cur, n_p - 1)]
        lost += int(((cur < n_p) & ~ok).sum())
    return {"naive_s": naive_s, "kernel_s": kernel_s, "months": months, "firms": n_firms,
            "capture_s": capture_s, "checked_decisions": decisions,
            "reconsidered": reconsidered, "lost_provider": lost,
            "switched": int(sum((m["after"]["current"] != m["current"]).sum() for m in cap)),
            "peak_mb": _peak_mb()}


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------

def _versions() -> dict:
    out = {}
    for pkg in ("numpy", "numba", "mesa", "polars"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "?"
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _spawn(args: list[str], cpu: int | None) -> dict:
    env = dict(os.environ)
    for var in ("POLARS_MAX_THREADS", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS",
                "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", *args]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"worker {' '.join(args)} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fmt_rate(x: float) -> str:
    return f"{x / 1e6:,.2f} M" if x >= 1e6 else f"{x / 1e3:,.1f} k"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats, skip the 1M-firm run")
    ap.add_argument("--no-pin", action="store_true",
                    help="do not pin the workers to one CPU core")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)

    if a.worker:
        if a.cpu is not None:
            os.sched_setaffinity(0, {a.cpu})
        kind, *nums = a.worker
        nums = [int(x) for x in nums]
        res = worker_full(*nums) if kind == "full" else worker_naive(*nums)
        print(json.dumps(res))
        return 0

    cpus = sorted(os.sched_getaffinity(0))
    cpu = None if a.no_pin else cpus[-1]
    v = _versions()
    load0 = os.getloadavg()
    print("machine:  " + platform.platform() + f" | {_cpu_model()} | cpu_count={os.cpu_count()}"
          f" | pinned to cpu {cpu if cpu is not None else '(none)'}")
    print(f"software: python {platform.python_version()} | numpy {v['numpy']} | numba "
          f"{v['numba']} | mesa {v['mesa']} | polars {v['polars']}")
    print(f"load average at start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}"
          f"{'   (quick mode)' if a.quick else ''}", flush=True)

    t_start = time.perf_counter()
    rows = []
    months_n = NAIVE_MONTHS_QUICK if a.quick else NAIVE_MONTHS
    reps_n = NAIVE_REPEATS_QUICK if a.quick else NAIVE_REPEATS
    naive = _spawn(["naive", str(NAIVE_FIRMS), str(months_n), str(reps_n),
                    str(KERNEL_REPEATS)], cpu)
    naive_s = statistics.median(naive["naive_s"])
    naive_rate = NAIVE_FIRMS * months_n / naive_s
    kernel_s = statistics.median(naive["kernel_s"])

    full = []
    for label, n, reps, quick_reps in FULL_CASES:
        r = quick_reps if a.quick else reps
        if r == 0:
            continue
        res = _spawn(["full", str(n), str(r)], cpu)
        res["label"] = label
        full.append(res)
        sec = statistics.median(res["seconds"])
        rows.append((label, r, n, res["months"], sec, n * res["months"] / sec,
                     f"{res['peak_mb']:,.0f}"))
    rows.append(("naive Mesa agents: firm step only", reps_n, NAIVE_FIRMS, months_n, naive_s,
                 naive_rate, f"{naive['peak_mb']:,.0f}"))
    rows.append(("numba kernel: same firm step/state", KERNEL_REPEATS, NAIVE_FIRMS, months_n,
                 kernel_s, NAIVE_FIRMS * months_n / kernel_s, "-"))

    head = ("case", "runs", "firms", "months", "seconds", "firm-months/s", "ratio vs naive",
            "peak MB")
    lines = [(lab, str(r), f"{n:,}", str(m), f"{s:.5f}" if s < 0.01 else f"{s:.3f}",
              _fmt_rate(rate), f"{rate / naive_rate:,.1f}x", mb)
             for lab, r, n, m, s, rate, mb in rows]
    widths = [max(len(x[i]) for x in [head, *lines]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    print()
    print(fmt.format(*head))
    print(fmt.format(*("-" * w for w in widths)))
    for ln in lines:
        print(fmt.format(*ln))

    print("\nsplit of the full-model medians (model run | building the 7 frames), warm-up:")
    for res in full:
        print(f"  {res['firms']:>9,} firms: {statistics.median(res['model_s']):.3f} s | "
              f"{statistics.median(res['frames_s']):.3f} s   (first run incl. numba load: "
              f"{res['warmup_s']:.2f} s; RSS after import+warm-up {res['rss_after_warmup_mb']:,.0f}"
              " MB)")
    print(f"naive check: {naive['checked_decisions']:,} firm-months, naive Mesa == kernel "
          f"(providers, tenure, tallies); {naive['reconsidered']:,} reconsidered, "
          f"{naive['switched']:,} switched, {naive['lost_provider']:,} lost their provider to a "
          f"ban over the {months_n} months from month {NAIVE_START}")

    by_n = {res["firms"]: res for res in full}
    checks = []
    if 100_000 in by_n:
        s = statistics.median(by_n[100_000]["seconds"])
        checks.append((f"100k firms x 156 months <= {TARGET_100K_S} s", s <= TARGET_100K_S,
                       f"{s:.3f} s, {_fmt_rate(100_000 * by_n[100_000]['months'] / s)}"
                       " firm-months/s"))
    if 20_000 in by_n:
        s = statistics.median(by_n[20_000]["seconds"])
        checks.append((f"app default (20k firms) < {TARGET_APP_S} s", s < TARGET_APP_S,
                       f"{s:.3f} s"))
    if 1_000_000 in by_n:
        mb = by_n[1_000_000]["peak_mb"]
        checks.append((f"1M firms peak RSS <= {TARGET_1M_MB} MB", mb <= TARGET_1M_MB,
                       f"{mb:,.0f} MB"))
    ratio = naive_s / kernel_s
    checks.append((f"kernel >= {TARGET_RATIO}x naive Mesa", ratio >= TARGET_RATIO,
                   f"{ratio:,.0f}x"))
    print("\ntargets:")
    for name, ok, val in checks:
        print(f"  [{'PASS' if ok else 'FAIL'}] {name}: {val}")
    load1 = os.getloadavg()
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s; load average at end: "
          f"{load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
