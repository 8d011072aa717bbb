"""Calibration report (``diffusim report calibration``): fit table, model-vs-data plots, posterior.

Reads a calibration file (default ``calibration/parameters.json``), prints every target
(observed, simulated median, 90 % band, within its uncertainty or not, loss) and the posterior
medians with 90 % intervals. With ``--out DIR`` it also simulates posterior draws and writes
PNG figures (matplotlib, Agg backend):

* ``targets_<family>.png``: for each target, the model's statistic month by month (median and
  5-95 % band over posterior draws; a window target is shown as its rolling value) against the
  observed figure: a point with its tolerance, a bound as a line with an arrow, a range as a bar;
* ``posterior_marginals.png``: histogram of each fitted parameter over its prior box, with the
  median and the 90 % interval;
* ``posterior_correlation.png``: rank correlations between fitted parameters (what the data
  cannot tell apart);
* ``targets.md`` and ``targets.csv``: the fit table.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from datetime import date
from pathlib import Path

import numpy as np

from sim.calibration import (
    CALIBRATION_END,
    _print_targets,
    _untransform,
    base_scenario_data,
    read_calibration,
)
from sim.inputs import data_hash
from sim.targets import Outputs, Target, build_targets, month_of

FAMILIES = (("huggingface_derivatives", ("hf_deriv", "hf_stock")),
            ("huggingface_downloads", ("dl_",)),
            ("tokens_and_usage", ("or_", "menlo_")),
            ("microsoft_adoption", ("ms_",)))


def rolling_task(base_json: str, values: dict, seed: int, n_firms: int) -> np.ndarray:
    """Every target's rolling statistic (targets x months) for one run (a worker task)."""
    from sim.model import run
    from sim.scenario import parse_scenario

    sc = parse_scenario(json.loads(base_json)).with_values(
        {f"assumptions.{k}": v for k, v in values.items()})
    out = Outputs(run(sc, int(seed), int(n_firms)))
    return np.stack([t.rolling(out) for t in build_targets()])


def simulate_draws(record: dict, draws: int, n_firms: int, workers: int | None = None,
                   seed: int = 0) -> np.ndarray:
    """Rolling statistics (draws, targets, months) for posterior draws of a calibration."""
    from sim.executor import Executor

    post = record["posterior"]
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(post), size=min(draws, len(post)), replace=False)
    base = json.dumps(base_scenario_data(), sort_keys=True, default=str)
    model_seeds = record.get("seeds") or [1]
    tasks = {i: (base, post[j], model_seeds[i % len(model_seeds)], n_firms)
             for i, j in enumerate(pick)}
    with Executor(workers=workers) as ex:
        res = {k: v for k, v, err in ex.map_unordered(rolling_task, tasks) if err is None}
    if not res:
        raise RuntimeError("no posterior draw could be simulated")
    return np.stack([res[k] for k in sorted(res)])


def _family(tid: str) -> str:
    for name, prefixes in FAMILIES:
        if tid.startswith(prefixes):
            return name
    return "other"


def plot_targets(targets: list[Target], series: np.ndarray, rows: dict, out: Path) -> list[Path]:
    """One PNG per target family: model band over time vs the observed figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_t = series.shape[2]
    dates = [month_of(i) for i in range(n_t)]
    written = []
    for fam, _ in FAMILIES:
        group = [(k, t) for k, t in enumerate(targets) if _family(t.id) == fam]
        if not group:
            continue
        ncol = 3
        nrow = math.ceil(len(group) / ncol)
        fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 3.1 * nrow), squeeze=False)
        for ax in axes.flat[len(group):]:
            ax.set_visible(False)
        for ax, (k, t) in zip(axes.flat, group):
            s = series[:, k, :]
            ok = np.isfinite(s).any(axis=0)
            with np.errstate(all="ignore"):
                q5, q50, q95 = np.nanquantile(s[:, ok], [0.05, 0.5, 0.95], axis=0)
            x = [d for d, o in zip(dates, ok) if o]
            ax.fill_between(x, q5, q95, color="#6a3d9a", alpha=0.25, lw=0,
                            label="model 5-95 %")
            ax.plot(x, q50, color="#6a3d9a", lw=1.5, label="model median")
            _draw_observed(ax, t)
            r = rows.get(t.id, {})
            mark = "within" if r.get("within") else "outside"
            ax.set_title(f"{t.id}\n({t.kind}, {t.reliability}; {mark})", fontsize=8)
            if t.scale == "log":
                ax.set_yscale("log")
            ax.tick_params(labelsize=7)
            ax.set_xlim(dates[0], dates[-1])
        axes.flat[0].legend(fontsize=7, loc="best")
        fig.suptitle(f"Calibration targets: {fam.replace('_', ' ')} (model = posterior draws; "
                     "black = data with its tolerance)", fontsize=10)
        fig.tight_layout(rect=(0, 0, 1, 0.97))
        path = out / f"targets_{fam}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _draw_observed(ax, t: Target) -> None:
    x0, x1 = month_of(t.window[1] - (t.windows[0][1] - t.windows[0][0])), month_of(t.window[1])
    xm = month_of(t.window[1])
    lo_t, hi_t = float(t.transform(t.lo)), float(t.transform(t.hi))
    if t.kind == "point":
        ax.errorbar([xm], [t.observed], yerr=[[t.observed - _untransform(t, lo_t - t.tolerance)],
                                               [_untransform(t, hi_t + t.tolerance) - t.observed]],
                    fmt="o", color="black", ms=5, capsize=3, label="observed +- tolerance")
        if x1 > x0:
            ax.hlines(t.observed, x0, x1, color="black", lw=1)
    elif t.kind == "range":
        ax.vlines(xm, t.lo, t.hi, color="black", lw=4, label="observed range")
    else:
        marker = "v" if t.kind == "upper" else "^"
        ax.hlines(t.observed, x0 if x1 > x0 else month_of(max(t.window[1] - 2, 0)), x1,
                  color="black", lw=1.5, linestyles="--")
        ax.plot([xm], [t.observed], marker=marker, color="black", ms=8,
                label=f"{t.kind} bound" if t.kind != "order" else "ordering (ratio 1)")


def plot_posterior(record: dict, out: Path) -> list[Path]:
    """Posterior marginals and rank correlations of the fitted parameters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    post = record["posterior"]
    prior = record.get("prior", {})
    names = list(record["parameters"])
    vals = np.array([[d[n] for n in names] for d in post], dtype=float)
    ncol = 4
    nrow = math.ceil(len(names) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 2.7 * nrow), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for j, (ax, n) in enumerate(zip(axes.flat, names)):
        p = prior.get(n, {})
        lo, hi = p.get("lo", vals[:, j].min()), p.get("hi", vals[:, j].max())
        logs = p.get("scale") == "log"
        bins = np.geomspace(lo, hi, 25) if logs else np.linspace(lo, hi, 25)
        ax.hist(vals[:, j], bins=bins, color="#1f78b4", alpha=0.8, label="posterior")
        q5, q50, q95 = record["intervals_90"][n]
        ax.axvline(q50, color="black", lw=1.5, label="median")
        ax.axvspan(q5, q95, color="grey", alpha=0.2, label="90 %")
        best = record.get("search", {}).get("best", {}).get(n)
        if best is not None:
            ax.axvline(best, color="#e31a1c", lw=1, ls=":", label="search best")
        if logs:
            from matplotlib.ticker import NullFormatter

            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlim(lo, hi)
        ax.set_title(f"{n}: {q50:.3g} [{q5:.3g}, {q95:.3g}]", fontsize=8)
        ax.tick_params(labelsize=7)
    axes.flat[0].legend(fontsize=6)
    fig.suptitle("Posterior marginals over the prior box (uniform prior)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    p1 = out / "posterior_marginals.png"
    fig.savefig(p1, dpi=110)
    plt.close(fig)
    from scipy.stats import spearmanr

    rho = spearmanr(vals).statistic if len(names) > 1 else np.ones((1, 1))
    rho = np.atleast_2d(np.nan_to_num(rho))
    fig, ax = plt.subplots(figsize=(0.55 * len(names) + 3, 0.55 * len(names) + 2))
    im = ax.imshow(rho, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    for i in range(len(names)):
        for k in range(len(names)):
            ax.text(k, i, f"{rho[i, k]:.1f}", ha="center", va="center", fontsize=6)
    fig.colorbar(im, ax=ax, shrink=0.7, label="Spearman rank correlation")
    ax.set_title("Posterior correlations", fontsize=10)
    fig.tight_layout()
    p2 = out / "posterior_correlation.png"
    fig.savefig(p2, dpi=110)
    plt.close(fig)
    return [p1, p2]


def markdown_table(rows: list[dict], targets: list[Target] | None = None) -> str:
    """The fit table as Markdown (with sources when targets are given)."""
    by_id = {t.id: t for t in targets or []}
    head = ("| target | date | kind | observed | simulated median | 90 % band | within | loss "
            "| reliability | source |\n|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        obs = (f"[{r['observed_lo']:.3g}, {r['observed_hi']:.3g}]" if r["kind"] == "range"
               else f"{r['observed']:.3g}")
        obs = {"lower": ">= ", "upper": "<= ", "order": "ratio >= "}.get(r["kind"], "") + obs
        t = by_id.get(r["id"])
        src = ""
        if t is not None:
            src = t.source.split(" https")[0].split(" (")[0][:60] if t.source else ""
        lines.append(f"| {r['id']} | {r['date']} | {r['kind']} | {obs} | "
                     f"{r['simulated_median']:.3g} | [{r['band_5']:.3g}, {r['band_95']:.3g}] | "
                     f"{'yes' if r['within'] else 'no'} | {r['loss']:.2f} | {r['reliability']} "
                     f"| {src.replace('|', '/')} |")
    return head + "\n".join(lines) + "\n"


def report(path: Path, out: Path | None = None, draws: int = 40, n_firms: int | None = None,
           workers: int | None = None, file=None) -> dict:
    """Print the fit table; with ``out``, simulate posterior draws and write the figures."""
    file = file or sys.stdout
    rec = read_calibration(path)
    print(f"{path}: {rec.get('method', '')}", file=file)
    print(f"fitted {rec.get('date')} on targets to {rec.get('until', CALIBRATION_END)}; budget "
          f"{rec.get('budget')} evaluations x {len(rec.get('seeds', []))} seeds, "
          f"{rec.get('n_firms')} firms; seed {rec.get('seed')}", file=file)
    if rec.get("data_hash") != data_hash():
        print("warning: the data in calibration/data/ changed since this calibration "
              "(data_hash differs); recalibrate", file=file)
    _print_targets(rec["targets"], file=file)
    print(f"\n{rec.get('n_within')} of {rec.get('n_targets')} targets within their uncertainty;"
          f" loss at the posterior medians {rec.get('loss', float('nan')):.2f}", file=file)
    print("posterior medians [90% interval] (prior box):", file=file)
    for name, (q5, q50, q95) in rec.get("intervals_90", {}).items():
        p = rec.get("prior", {}).get(name, {})
        print(f"  {name:24s} {q50:9.4g}  [{q5:.4g}, {q95:.4g}]   ({p.get('lo')}, "
              f"{p.get('hi')}{', log' if p.get('scale') == 'log' else ''})", file=file)
    written: list[Path] = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        targets = list(build_targets())
        by_id = {t.id: t for t in targets}
        fitted = [t for t in (by_id.get(r["id"]) for r in rec["targets"]) if t is not None]
        series = simulate_draws(rec, draws, n_firms or int(rec.get("n_firms", 5000)), workers)
        cols = [targets.index(t) for t in fitted]
        rows = {r["id"]: r for r in rec["targets"]}
        written += plot_targets(fitted, series[:, cols, :], rows, out)
        written += plot_posterior(rec, out)
        (out / "targets.md").write_text(markdown_table(rec["targets"], fitted))
        with (out / "targets.csv").open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rec["targets"][0]))
            w.writeheader()
            w.writerows(rec["targets"])
        written += [out / "targets.md", out / "targets.csv"]
        print("wrote " + ", ".join(str(p) for p in written), file=file)
    return {"record": rec, "written": written, "date": date.today().isoformat()}
