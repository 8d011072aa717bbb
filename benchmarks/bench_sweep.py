"""Benchmark the sweep machinery: runs per second serially, on 2 local processes and on Dask.

Run from the repository root::

    .venv/bin/python benchmarks/bench_sweep.py              # 60 runs per case, ~1.5 min
    .venv/bin/python benchmarks/bench_sweep.py --runs 200   # steadier numbers

Every case runs the same Latin-hypercube sweep (two levers, the baseline horizon of 156 months,
10,000 firms, 8 outcomes x 2 dates) from scratch into a fresh folder with ``run_sweep``, the
function behind ``diffusim sweep``. The table gives, per case:

* ``runs/s``: runs / wall time of the whole sweep (worker start-up included);
* ``steady``: runs/s after the first result (start-up excluded);
* ``model ms``: mean time of ``sim.run`` inside the workers (slower than alone when two
  processes share two cores and the memory bus);
* ``reduce ms``: reducing a run to its outcomes, in the worker;
* ``write ms``: building the run's frame and writing its Parquet file atomically (with fsync),
  in the parent;
* ``overhead``: (wall x workers - model time) / model time: every core-second not spent in
  the model (start-up, scheduling, reduce, write, idle), as % of model time.

The reference line ``model alone`` is ``sim.run`` in this process, one run at a time.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FIRMS = 10_000
TARGET_RUNS_PER_S = 15.0  # on 2 cores, from the sweep brief


def sweep_file(folder: Path, runs: int) -> Path:
    path = folder / "bench.yaml"
    path.write_text(f"""
name: bench
scenario: {ROOT / 'scenarios' / 'baseline.yaml'}
parameters:
  levers.export_controls: {{low: 0.0, high: 1.0}}
  assumptions.b_cost: {{low: 0.3, high: 1.2}}
design: {{kind: lhs, n: {runs}}}
seeds: 1
firms: {FIRMS}
outcomes: [share_CN_WLD, share_US_WLD, share_CN_LMC, dependency_CN_LMC, infra_dependency_US_LMC,
           ai_adoption_WLD, majority_countries_CN, majority_countries_US]
dates: [2030-12, 2035-12]
""")
    return path


def model_alone(plan, repeats: int) -> float:
    from sim import run

    run(plan.base, seed=1, n_firms=FIRMS)  # warm-up: numba cache, data
    times = []
    for i in range(repeats):
        t = time.perf_counter()
        run(plan.base.with_values(plan.values(i)), seed=plan.seeds[0], n_firms=FIRMS)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def case(label: str, plan, folder: Path, n_workers: int, **kw) -> dict:
    from sim.sweep import run_sweep

    s = run_sweep(plan, folder / label.replace(" ", "_"), progress=False, **kw)
    se = s.session
    n = se["runs_done"]
    steady = (n - n_workers) / max(se["loop_s"] - se["first_result_s"], 1e-9) \
        if n > n_workers else float("nan")
    return {"case": label, "workers": n_workers, "runs": n, "wall": s.wall_s,
            "rate": n / s.wall_s, "steady": steady, "first": se["first_result_s"],
            "model": se["model_s"] / n, "reduce": se["reduce_s"] / n, "write": se["write_s"] / n,
            "overhead": (s.wall_s * n_workers - se["model_s"]) / se["model_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--no-dask", action="store_true")
    args = ap.parse_args()

    from sim.sweep import load_sweep

    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        folder = Path(tmp)
        plan = load_sweep(sweep_file(folder, args.runs))
        alone = model_alone(plan, 5)
        rows = [case("serial", plan, folder, 1, workers=1),
                case("2 processes", plan, folder, 2, workers=2)]
        if not args.no_dask:
            from dask.distributed import LocalCluster

            t = time.perf_counter()
            with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                              dashboard_address=None) as cluster:
                start = time.perf_counter() - t
                rows.append(case("dask 2 workers", plan, folder, 2,
                                 scheduler=cluster.scheduler_address))
            rows[-1]["case"] += f" (cluster start {start:.1f} s, not counted)"

    print(f"diffusim sweep benchmark: {args.runs} runs per case, {FIRMS:,} firms, "
          f"{plan.base.n_months} months, {len(plan.outcomes)} outcomes x {len(plan.dates)} dates")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}; load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"model alone (sim.run, this process): {alone * 1000:.0f} ms per run = "
          f"{1 / alone:.1f} runs/s on one core, {2 / alone:.1f} runs/s at best on two\n")
    head = (f"{'case':<28}{'runs/s':>8}{'steady':>8}{'1st (s)':>9}{'model ms':>10}"
            f"{'reduce ms':>11}{'write ms':>10}{'overhead':>10}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['case'][:28]:<28}{r['rate']:>8.2f}{r['steady']:>8.2f}{r['first']:>9.2f}"
              f"{r['model'] * 1000:>10.0f}{r['reduce'] * 1000:>11.1f}{r['write'] * 1000:>10.1f}"
              f"{r['overhead']:>9.0%}")
    for r in rows:
        if len(r["case"]) > 28:
            print(f"note: {r['case']}")
    best = max(r["steady"] for r in rows if r["workers"] == 2)
    print(f"\ntarget {TARGET_RUNS_PER_S:.0f} runs/s on 2 cores: best steady rate {best:.1f} "
          f"runs/s ({'met' if best >= TARGET_RUNS_PER_S else 'not met'}); the model alone "
          f"caps two cores at {2 / alone:.1f} runs/s")


if __name__ == "__main__":
    main()
