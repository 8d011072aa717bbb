"""Analysis of a sweep: global sensitivity and scenario discovery.

* Sobol indices with confidence intervals (SALib, on a ``sobol`` design: Saltelli's scheme),
* Morris screening (SALib, on a ``morris`` design),
* a one-at-a-time tornado (on an ``oat`` design),
* Spearman rank correlations (any design with varied parameters), and
* PRIM scenario discovery (EMA Workbench, any design): which boxes of parameter values lead to an
  outcome condition such as ``share_CN_LMC > 0.5``.

Each method is one small function over arrays (``sobol_indices(problem, y)``,
``morris_screening(problem, x, y)``, ``prim_box(x, y)``, ...), so it can be checked against
problems with known answers; :func:`analyze` applies the ones a sweep's design supports to one
outcome at one date, and the ``diffusim analyze`` command prints the tables and saves PNG plots.
Sensitivity uses the mean over replicate seeds of each design point; PRIM uses every run.
"""

from __future__ import annotations

import math
import operator
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from sim.sweep import SweepError, read_meta, scan_results, unit_problem

OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


def _agg_backend() -> None:
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")


# ---------------------------------------------------------------------------------------------
# Methods over arrays
# ---------------------------------------------------------------------------------------------

def sobol_indices(problem: dict, y: np.ndarray, second_order: bool = False,
                  conf_level: float = 0.95, seed: int | None = 0) -> dict[str, pl.DataFrame]:
    """First-order and total Sobol indices with bootstrap confidence intervals (SALib).

    ``y`` holds the model output at the points of ``SALib.sample.sobol.sample(problem, N,
    calc_second_order=second_order)``, in that order. Returns ``{"indices": frame}`` (parameter,
    S1, S1_conf, ST, ST_conf) and, with ``second_order``, ``{"pairs": frame}`` (S2, S2_conf).
    """
    from SALib.analyze import sobol

    y = np.asarray(y, dtype=float)
    if not np.isfinite(y).all():
        raise SweepError("Sobol indices need a finite output at every design point")
    res = sobol.analyze(problem, y, calc_second_order=second_order, conf_level=conf_level,
                        print_to_console=False, seed=seed)
    out = {"indices": pl.DataFrame({
        "parameter": problem["names"], "S1": res["S1"], "S1_conf": res["S1_conf"],
        "ST": res["ST"], "ST_conf": res["ST_conf"]})}
    if second_order:
        names = problem["names"]
        rows = [{"parameter_1": names[i], "parameter_2": names[j], "S2": res["S2"][i, j],
                 "S2_conf": res["S2_conf"][i, j]}
                for i in range(len(names)) for j in range(i + 1, len(names))]
        out["pairs"] = pl.DataFrame(rows, schema={"parameter_1": pl.String,
                                                  "parameter_2": pl.String,
                                                  "S2": pl.Float64, "S2_conf": pl.Float64})
    return out


def morris_screening(problem: dict, x: np.ndarray, y: np.ndarray, num_levels: int = 4,
                     conf_level: float = 0.95, seed: int | None = 0) -> pl.DataFrame:
    """Morris elementary effects (SALib): mu, mu* (with confidence interval) and sigma.

    ``x`` are the points of ``SALib.sample.morris.sample(problem, N, num_levels)``; effects are
    per unit of the problem's range.
    """
    from SALib.analyze import morris

    y = np.asarray(y, dtype=float)
    if not np.isfinite(y).all():
        raise SweepError("Morris screening needs a finite output at every design point")
    res = morris.analyze(problem, np.asarray(x, dtype=float), y, num_levels=num_levels,
                         conf_level=conf_level, print_to_console=False, seed=seed)
    return pl.DataFrame({"parameter": problem["names"], "mu": np.asarray(res["mu"]),
                         "mu_star": np.asarray(res["mu_star"]),
                         "mu_star_conf": np.asarray(res["mu_star_conf"]),
                         "sigma": np.asarray(res["sigma"])}).sort("mu_star", descending=True)


def tornado(names: list[str], points: list[list], centre: int, y: np.ndarray) -> pl.DataFrame:
    """One-at-a-time swings: for each parameter, the output range when it alone moves.

    ``points`` is an ``oat`` design (the centre, then each parameter alone at other values);
    rows are sorted by swing, largest first.
    """
    y = np.asarray(y, dtype=float)
    base = points[centre]
    rows = []
    for j, name in enumerate(names):
        idx = [i for i, p in enumerate(points) if i != centre and p[j] != base[j]
               and all(p[k] == base[k] for k in range(len(names)) if k != j)]
        vals = [(points[i][j], y[i]) for i in idx if np.isfinite(y[i])]
        if not vals:
            continue
        lo = min(vals, key=lambda t: t[1])
        hi = max(vals, key=lambda t: t[1])
        rows.append({"parameter": name, "base_value": float(base[j]), "y_base": y[centre],
                     "value_at_min": float(lo[0]), "y_min": lo[1],
                     "value_at_max": float(hi[0]), "y_max": hi[1],
                     "swing": max(hi[1], y[centre]) - min(lo[1], y[centre])})
    schema = {"parameter": pl.String, "base_value": pl.Float64, "y_base": pl.Float64,
              "value_at_min": pl.Float64, "y_min": pl.Float64, "value_at_max": pl.Float64,
              "y_max": pl.Float64, "swing": pl.Float64}
    return pl.DataFrame(rows, schema=schema).sort("swing", descending=True)


def rank_correlations(x: pl.DataFrame, y: np.ndarray) -> pl.DataFrame:
    """Spearman rank correlation of the output with each parameter (a quick global screen)."""
    from scipy.stats import spearmanr

    rows = []
    for name in x.columns:
        col = x[name].cast(pl.Float64).to_numpy()
        if np.ptp(col) == 0 or np.ptp(y) == 0:
            rho, p = float("nan"), float("nan")
        else:
            r = spearmanr(col, y)
            rho, p = float(r.statistic), float(r.pvalue)
        rows.append({"parameter": name, "spearman_rho": rho, "p_value": p})
    return pl.DataFrame(rows).sort(pl.col("spearman_rho").abs(), descending=True,
                                   nulls_last=True)


@dataclass
class Box:
    """A PRIM box: the restricted parameters' limits and the box's statistics."""

    limits: pl.DataFrame  # parameter, min, max (or levels), qp_lower, qp_upper
    coverage: float  # share of all cases of interest that fall in the box
    density: float  # share of the box's cases that are of interest
    mass: float  # share of all cases in the box
    n_cases: int
    n_interest: int
    trajectory: pl.DataFrame = field(repr=False)


def prim_box(x: pl.DataFrame, y: np.ndarray, min_density: float = 0.8,
             peel_alpha: float = 0.05, mass_min: float = 0.05) -> Box:
    """Find the box of parameter values where ``y`` (true = case of interest) concentrates.

    Runs PRIM (``ema_workbench.analysis.prim``) and picks, on its peeling trajectory, the box
    with the highest coverage whose density is at least ``min_density`` (else the densest).
    """
    _agg_backend()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from ema_workbench.analysis import prim

    y = np.asarray(y, dtype=bool)
    if len(y) != x.height:
        raise ValueError(f"x has {x.height} rows, y {len(y)}")
    if y.all() or not y.any():
        raise SweepError(f"the condition holds in {int(y.sum())} of {len(y)} runs; PRIM needs "
                         "runs on both sides of it")
    xp = x.to_pandas()
    for c in x.columns:
        if x[c].dtype == pl.Boolean:
            xp[c] = xp[c].astype(str)  # a nominal dimension for PRIM
    p = prim.Prim(xp, y, peel_alpha=peel_alpha, mass_min=mass_min)
    box = p.find_box()
    traj = pl.from_pandas(box.peeling_trajectory.reset_index(drop=True))
    dens = traj["density"].to_numpy()
    cov = traj["coverage"].to_numpy()
    ok = np.flatnonzero(dens >= min_density)
    # widest box that is dense enough (ties: the denser); else the densest box
    i = int(max(ok, key=lambda k: (cov[k], dens[k]))) if len(ok) else int(np.argmax(dens))
    box.select(i)
    init = box.box_lims[0]
    lims = box.box_lims[i]
    rows = []
    for c in x.columns:
        lo, hi = lims[c].iloc[0], lims[c].iloc[1]
        lo0, hi0 = init[c].iloc[0], init[c].iloc[1]
        if isinstance(lo, set | frozenset):
            if set(lo) == set(lo0):
                continue
            rows.append({"parameter": c, "min": None, "max": None,
                         "levels": ",".join(sorted(map(str, lo)))})
        elif lo > lo0 or hi < hi0:
            rows.append({"parameter": c, "min": float(lo), "max": float(hi), "levels": None})
    qp = box.p_values[i] if i < len(box.p_values) else {}
    for r in rows:
        q = qp.get(r["parameter"], [float("nan"), float("nan")])
        r["qp_lower"] = float("nan") if q[0] is None or q[0] < 0 else float(q[0])
        r["qp_upper"] = float("nan") if q[1] is None or q[1] < 0 else float(q[1])
    schema = {"parameter": pl.String, "min": pl.Float64, "max": pl.Float64, "levels": pl.String,
              "qp_lower": pl.Float64, "qp_upper": pl.Float64}
    stats = traj.row(i, named=True)
    return Box(limits=pl.DataFrame(rows, schema=schema), coverage=float(stats["coverage"]),
               density=float(stats["density"]), mass=float(stats["mass"]),
               n_cases=int(round(stats["mass"] * len(y))), n_interest=int(y.sum()),
               trajectory=traj.select("coverage", "density", "mass", "res_dim"))


@dataclass(frozen=True)
class Condition:
    """An outcome condition such as ``share_CN_LMC > 0.5``."""

    outcome: str
    op: str
    threshold: float

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """Which values meet the condition."""
        return OPS[self.op](np.asarray(values, dtype=float), self.threshold)

    def __str__(self) -> str:
        return f"{self.outcome} {self.op} {self.threshold:g}"


def parse_condition(text: str) -> Condition:
    """Parse ``OUTCOME OP NUMBER`` with OP one of >, >=, <, <=."""
    m = re.fullmatch(r"\s*([A-Za-z][A-Za-z0-9_]*)\s*(>=|<=|>|<)\s*([-+0-9.eE]+)\s*", text or "")
    try:
        value = float(m.group(3)) if m else float("nan")
    except ValueError:
        value = float("nan")
    if not m or not math.isfinite(value):
        raise SweepError(f"--condition: {text!r} is not a condition; write OUTCOME OP NUMBER "
                         "with OP one of >, >=, <, <= (e.g. \"share_CN_LMC > 0.5\")")
    return Condition(m.group(1), m.group(2), value)


# ---------------------------------------------------------------------------------------------
# Plots (matplotlib, Agg; figures built without pyplot's global state)
# ---------------------------------------------------------------------------------------------

def _figure(h: float):
    _agg_backend()
    from matplotlib.figure import Figure

    return Figure(figsize=(7.5, h), layout="constrained")


def _short(name: str) -> str:
    return name.rpartition(".")[2]


def plot_sobol(table: pl.DataFrame, title: str, path: Path) -> Path:
    """Bar chart of S1 and ST with their confidence intervals."""
    fig = _figure(1.2 + 0.45 * table.height)
    ax = fig.add_subplot()
    ypos = np.arange(table.height)
    ax.barh(ypos - 0.2, table["S1"], 0.4, xerr=table["S1_conf"], label="first order S1")
    ax.barh(ypos + 0.2, table["ST"], 0.4, xerr=table["ST_conf"], label="total ST")
    ax.set_yticks(ypos, [_short(n) for n in table["parameter"]])
    ax.invert_yaxis()
    ax.set_xlabel("Sobol index (share of output variance)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.savefig(path, dpi=110)
    return path


def plot_morris(table: pl.DataFrame, title: str, path: Path) -> Path:
    """Morris mu* against sigma: far right = influential, high = non-linear or interacting."""
    fig = _figure(4.5)
    ax = fig.add_subplot()
    ax.errorbar(table["mu_star"], table["sigma"], xerr=table["mu_star_conf"], fmt="o")
    for name, mu, sd in zip(table["parameter"], table["mu_star"], table["sigma"]):
        ax.annotate(_short(name), (mu, sd), fontsize=8, xytext=(4, 4),
                    textcoords="offset points")
    ax.set_xlabel("mu* (mean |elementary effect| per unit of range)")
    ax.set_ylabel("sigma")
    ax.set_title(title, fontsize=10)
    fig.savefig(path, dpi=110)
    return path


def plot_tornado(table: pl.DataFrame, title: str, path: Path) -> Path:
    """Tornado: each parameter's output range around the base run."""
    fig = _figure(1.2 + 0.45 * max(table.height, 1))
    ax = fig.add_subplot()
    if table.height:
        base = table["y_base"][0]
        ypos = np.arange(table.height)
        ax.barh(ypos, table["y_max"] - base, left=base, color="tab:blue",
                label="parameter at the value giving the max")
        ax.barh(ypos, table["y_min"] - base, left=base, color="tab:orange",
                label="parameter at the value giving the min")
        ax.axvline(base, color="k", lw=0.8)
        ax.set_yticks(ypos, [f"{_short(n)} [{a:g}, {b:g}]" for n, a, b in zip(
            table["parameter"], table["value_at_min"], table["value_at_max"])])
        ax.invert_yaxis()
        ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.savefig(path, dpi=110)
    return path


def plot_prim(box: Box, title: str, path: Path) -> Path:
    """PRIM peeling trajectory: coverage against density, coloured by restricted dimensions."""
    fig = _figure(4.5)
    ax = fig.add_subplot()
    t = box.trajectory
    sc = ax.scatter(t["coverage"], t["density"], c=t["res_dim"], cmap="viridis", s=18)
    ax.scatter([box.coverage], [box.density], s=120, facecolors="none", edgecolors="red",
               label="selected box")
    fig.colorbar(sc, ax=ax, label="restricted parameters")
    ax.set_xlabel("coverage")
    ax.set_ylabel("density")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower left", fontsize=8)
    fig.savefig(path, dpi=110)
    return path


# ---------------------------------------------------------------------------------------------
# A sweep folder
# ---------------------------------------------------------------------------------------------

@dataclass
class Report:
    """What :func:`analyze` found: named tables, notes and the files it wrote."""

    outcome: str
    date: str
    design: str
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    box: Box | None = None
    condition: Condition | None = None
    notes: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def _pick_date(meta: dict, text: str | None) -> str:
    dates = meta["dates"]
    if text is None:
        return dates[-1]
    m = re.fullmatch(r"\s*(\d{4})-(\d{1,2})(?:-\d{1,2})?\s*", text)
    want = f"{int(m.group(1)):04d}-{int(m.group(2)):02d}-01" if m else None
    if want not in dates:
        raise SweepError(f"--date: {text!r} is not a kept date; the sweep kept "
                         f"{', '.join(d[:7] for d in dates)}")
    return want


def _pick_outcome(meta: dict, name: str | None, option: str = "--outcome") -> str:
    if name is None:
        return meta["outcomes"][0]
    if name not in meta["outcomes"]:
        shown = ", ".join(meta["outcomes"][:20]) + (" ..." if len(meta["outcomes"]) > 20 else "")
        raise SweepError(f"{option}: {name!r} was not kept by this sweep; kept: {shown}")
    return name


def run_table(results: pl.LazyFrame, names: list[str], outcome: str,
              date: str) -> pl.DataFrame:
    """One row per run: point, replicate, seed, the varied parameters and the outcome value."""
    d = pl.lit(date).str.to_date()
    return (results.filter((pl.col("outcome") == outcome) & (pl.col("date") == d))
            .select("run_id", "point", "replicate", "seed", *names, "value")
            .sort("point", "replicate").collect())


def point_means(table: pl.DataFrame, n_points: int) -> np.ndarray:
    """Mean over replicates of each design point (NaN where no replicate has a result)."""
    y = np.full(n_points, np.nan)
    g = table.group_by("point").agg(pl.col("value").mean())
    y[g["point"].to_numpy()] = g["value"].to_numpy()
    return y


def _need_all(y: np.ndarray, method: str) -> None:
    missing = int(np.isnan(y).sum())
    if missing:
        raise SweepError(f"{method} needs every design point; {missing} of {len(y)} have no "
                         "result (failed or not run yet): run the same sweep command again to "
                         "complete it")


def analyze(out_dir: str | Path, outcome: str | None = None, date: str | None = None,
            condition: str | None = None, plots_dir: str | Path | None = None,
            min_density: float = 0.8) -> Report:
    """Sensitivity (by design) and, given a condition, PRIM for one outcome at one date."""
    meta = read_meta(out_dir)
    results = scan_results(out_dir)
    design = meta["design"]
    names = [p["name"] for p in design["parameters"]]
    cond = parse_condition(condition) if condition else None
    outcome = _pick_outcome(meta, cond.outcome if cond and outcome is None else outcome)
    date = _pick_date(meta, date)
    rep = Report(outcome=outcome, date=date[:7], design=design["kind"], condition=cond)
    plots = Path(plots_dir) if plots_dir else Path(out_dir) / "analysis"
    try:
        plots.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"--plots {plots}: cannot write there ({exc.strerror or exc})") from None
    tag = f"{outcome}_{date[:7]}"
    table = run_table(results, names, outcome, date)
    vals = table["value"]
    rep.tables["summary"] = pl.DataFrame({
        "outcome": [outcome], "date": [date[:7]], "runs": [table.height],
        "mean": [vals.mean()], "sd": [vals.std()], "min": [vals.min()],
        "p05": [vals.quantile(0.05)], "median": [vals.median()],
        "p95": [vals.quantile(0.95)], "max": [vals.max()]})
    y = point_means(table, design["n_points"])
    kind = design["kind"]
    title = f"{outcome}, {date[:7]} ({meta['name']})"
    seed = int(meta.get("seed", 0)) % (2**32)
    if kind == "sobol" and names:
        _need_all(y, "Sobol analysis")
        res = sobol_indices(unit_problem(names), y, design["settings"]["second_order"],
                            seed=seed)
        rep.tables["sobol"] = res["indices"]
        if "pairs" in res:
            rep.tables["sobol_pairs"] = res["pairs"]
        rep.files.append(plot_sobol(res["indices"], "Sobol indices: " + title,
                                    plots / f"sobol_{tag}.png"))
    elif kind == "morris" and names:
        _need_all(y, "Morris screening")
        res = morris_screening(unit_problem(names), np.asarray(design["unit"]), y,
                               design["settings"]["num_levels"], seed=seed)
        rep.tables["morris"] = res
        rep.files.append(plot_morris(res, "Morris screening: " + title,
                                     plots / f"morris_{tag}.png"))
    elif kind == "oat" and names:
        res = tornado(names, design["points"], design["centre"], y)
        rep.tables["tornado"] = res
        rep.files.append(plot_tornado(res, "One-at-a-time: " + title,
                                      plots / f"tornado_{tag}.png"))
    else:
        rep.notes.append(f"a {kind} design supports no variance-based method: Sobol indices need "
                         "a sobol design, Morris screening a morris design, the tornado an oat "
                         "design")
    if names and table.height > 2:
        rep.tables["rank_correlation"] = rank_correlations(table.select(names),
                                                           table["value"].to_numpy())
    if cond is not None:
        if not names:
            raise SweepError("--condition: this sweep varies no parameter; PRIM has nothing "
                             "to restrict")
        cases = table if cond.outcome == outcome else run_table(
            results, names, _pick_outcome(meta, cond.outcome, "--condition"), date)
        ok = cond(cases["value"].to_numpy())
        box = prim_box(cases.select(names), ok, min_density=min_density)
        rep.box = box
        rep.tables["prim_box"] = box.limits
        rep.files.append(plot_prim(box, f"PRIM: {cond} at {date[:7]}",
                                   plots / f"prim_{cond.outcome}_{date[:7]}.png"))
    for name, t in rep.tables.items():
        path = plots / (f"{name}_{cond.outcome}_{date[:7]}.csv" if name == "prim_box"
                        else f"{name}_{tag}.csv")
        t.write_csv(path)
        rep.files.append(path)
    return rep


def format_report(rep: Report) -> str:
    """The report as text tables."""
    lines = [f"outcome {rep.outcome} at {rep.date} ({rep.design} design)", ""]
    titles = {"summary": "across runs", "sobol": "Sobol indices (95% confidence intervals)",
              "sobol_pairs": "second-order Sobol indices",
              "morris": "Morris screening (effects per unit of each parameter's range)",
              "tornado": "one-at-a-time tornado", "rank_correlation": "Spearman rank correlation",
              "prim_box": "PRIM box (restricted parameters)"}
    with pl.Config(tbl_rows=50, tbl_cols=12, float_precision=4, tbl_width_chars=120,
                   tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        for name, t in rep.tables.items():
            lines.append(titles.get(name, name) + ":")
            if name == "prim_box" and rep.box is not None:
                b = rep.box
                lines.append(f"  cases of interest ({rep.condition}): {b.n_interest}; box: "
                             f"coverage {b.coverage:.2f}, density {b.density:.2f}, mass "
                             f"{b.mass:.2f} ({b.n_cases} runs)")
            lines.append(str(t))
            lines.append("")
    lines.extend(f"note: {n}" for n in rep.notes)
    return "\n".join(lines)


def _cmd_analyze(args) -> int:
    rep = analyze(args.dir, outcome=args.outcome, date=args.date, condition=args.condition,
                  plots_dir=args.plots, min_density=args.min_density)
    print(format_report(rep))
    print("wrote " + ", ".join(str(f) for f in rep.files))
    return 0


def _fraction(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--min-density: {text!r} is not a number") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"--min-density: {value} is not allowed; use a number "
                                         "in (0, 1]")
    return value


def register(sub) -> None:
    """The ``analyze`` command."""
    p = sub.add_parser("analyze", help="sensitivity (Sobol, Morris, tornado) and scenario "
                       "discovery (PRIM) for a sweep folder", description="Analyse one outcome "
                       "of a sweep at one date. See docs/sweeps.md.")
    p.add_argument("dir", help="sweep output folder (diffusim sweep --out)")
    p.add_argument("--outcome", help="outcome name (default: the first kept, or the "
                   "condition's)")
    p.add_argument("--date", help="YYYY-MM (default: the last kept date)")
    p.add_argument("--condition", help='PRIM scenario discovery, e.g. "share_CN_LMC > 0.5"')
    p.add_argument("--min-density", type=_fraction, default=0.8,
                   help="PRIM: pick the widest box at least this dense (default 0.8)")
    p.add_argument("--plots", help="folder for PNG plots and CSV tables (default DIR/analysis)")
    p.set_defaults(func=_cmd_analyze)
