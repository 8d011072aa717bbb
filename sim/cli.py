"""The ``diffusim`` command line: a thin shell over the library.

Sub-commands live next to what they run; each module in :data:`COMMAND_MODULES` has a
``register(subparsers)`` function that adds its commands. Errors a user can fix (bad scenario,
bad option, unwritable folder) print one clear message and exit with status 2, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from sim.inputs import DataError
from sim.scenario import Levers, ScenarioError, load_scenario

COMMAND_MODULES: tuple[str, ...] = ("sim.cli", "sim.sweep", "sim.analysis", "sim.calibration")


class UsageError(ValueError):
    """A command-line value is not allowed."""


def positive_int(name: str, lo: int = 1, hi: int | None = None):
    """Argparse type for a bounded integer, with a message naming the option."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name}: {text!r} is not an integer") from None
        if value < lo or (hi is not None and value > hi):
            allowed = f">= {lo}" if hi is None else f"from {lo} to {hi}"
            raise argparse.ArgumentTypeError(f"{name}: {value} is not allowed; use {allowed}")
        return value
    return parse


def _cmd_run(args) -> int:
    from sim.model import MAX_FIRMS, run

    scenario = load_scenario(args.scenario)
    if not (1000 <= args.firms <= MAX_FIRMS):
        raise UsageError(f"--firms: {args.firms} is not allowed; use 1000 to {MAX_FIRMS}")
    result = run(scenario, seed=args.seed, n_firms=args.firms)
    out = result.write(args.out)
    world = result.share("WLD", "bloc")
    last = world.tail(1).to_dicts()[0]
    shares = ", ".join(f"{k} {v:.1%}" for k, v in last.items() if k != "date")
    print(f"{scenario.name}: seed {args.seed}, {args.firms} firms, "
          f"{result.manifest['months']} months in {result.manifest['wall_time_s']:.2f} s")
    print(f"world shares {last['date']}: {shares}")
    print(f"wrote {out}/adoption.parquet, observables.parquet, dependency.parquet, "
          "manifest.json (+ ecosystem, kpis, policies, cutoff)")
    return 0


def _cmd_validate(args) -> int:
    bad = 0
    for path in args.files:
        try:
            sc = load_scenario(path)
            print(f"ok  {path}: {sc.name} ({len(sc.events)} events)")
        except ScenarioError as exc:
            bad += 1
            print(str(exc), file=sys.stderr)
    return 2 if bad else 0


def _cmd_schema(args) -> int:
    from sim.scenario import Scenario, parameter_table

    text = parameter_table() if args.markdown else json.dumps(Scenario.model_json_schema(),
                                                                  indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text)
    return 0


def _month_arg(text: str):
    from datetime import date

    try:
        parts = [int(x) for x in text.split("-")]
        return date(parts[0], parts[1], 1)
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a month (YYYY-MM)") from None


def _print_table(df, floats: str = "{:.3f}") -> None:
    cols = df.columns
    fmts = ["{:+.3f}" if c.startswith("delta") else floats for c in cols]
    cells = [[_fmt(v, f) for v in df[c]] for c, f in zip(cols, fmts)]
    widths = [max([len(c), *(len(x) for x in col)]) for c, col in zip(cols, cells)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for i in range(df.height):
        print("  ".join(col[i].ljust(w) for col, w in zip(cells, widths)))


def _fmt(v, floats: str) -> str:
    if isinstance(v, float):
        return floats.format(v)
    return "-" if v is None else str(v)


def _cmd_compare(args) -> int:
    from sim.comparison import compare, headline

    base = load_scenario(args.base)
    other = load_scenario(args.other)
    seeds = list(range(args.seed, args.seed + args.seeds))
    table = compare(base, other, seeds, args.firms)
    print(f"{other.name} minus {base.name}: {args.seeds} paired seeds, {args.firms} firms "
          "(delta = mean paired difference; band = 5-95% across seeds)")
    _print_table(table if args.all else headline(table))
    if args.out:
        _write_csv(table, args.out)
    return 0


def _write_csv(df, path: str) -> None:
    import os
    import tempfile

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".csv")
    os.close(fd)
    try:
        df.write_csv(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    print(f"wrote {target}")


def _cmd_stress(args) -> int:
    from sim.countries import known_groups, known_iso3
    from sim.stress import cutoff_test

    scenario = load_scenario(args.scenario)
    groups, countries = [], []
    for item in [x.strip() for x in args.target.split(",") if x.strip()]:
        if item in known_groups():
            groups.append(item)
        elif item in known_iso3():
            countries.append(item)
        else:
            groups_ = ", ".join(sorted(known_groups()))
            raise UsageError(f"--target: {item!r} is neither a group ({groups_}) nor an ISO3 "
                             "code of a modelled country")
    res = cutoff_test(scenario, args.seed, args.firms, args.cutoff, groups, args.at,
                      months=args.months, countries=countries)
    print(f"{scenario.name}: {args.cutoff} APIs cut off for {args.target} from "
          f"{args.at:%Y-%m}" + (f" for {args.months} months" if args.months else " for good"))
    summary = res.summary
    regions = [*groups, *countries, "WLD"]
    first = summary.filter(pl_in(summary, regions))
    rest = summary.filter(~pl_in(summary, regions)).head(args.top)
    import polars as pl

    _print_table(pl.concat([first, rest]))
    print("disrupted_share: share of the region's AI usage cut off; months_to_90: months until "
          "90% of it is served again (- = not within the run)")
    if args.out:
        _write_csv(res.curve, args.out)
    return 0


def pl_in(df, values):
    """Polars expression: region in values."""
    import polars as pl

    return pl.col("region").is_in(values)


def register(sub) -> None:
    """Core commands: run, validate, schema, compare, stress."""
    from sim.model import DEFAULT_FIRMS

    p = sub.add_parser("run", help="run one scenario and write the output files")
    p.add_argument("scenario", help="scenario YAML file")
    p.add_argument("--seed", type=positive_int("--seed", 0), default=1)
    p.add_argument("--firms", type=positive_int("--firms", 1000), default=DEFAULT_FIRMS)
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=_cmd_run)
    p = sub.add_parser("validate", help="check scenario files")
    p.add_argument("files", nargs="+")
    p.set_defaults(func=_cmd_validate)
    p = sub.add_parser("compare", help="paired KPI deltas of a scenario against a base")
    p.add_argument("base")
    p.add_argument("other")
    p.add_argument("--seeds", type=positive_int("--seeds", 1, 200), default=5)
    p.add_argument("--seed", type=positive_int("--seed", 0), default=1, help="first seed")
    p.add_argument("--firms", type=positive_int("--firms", 1000, 2_000_000), default=10_000)
    p.add_argument("--all", action="store_true", help="print every KPI, not the headline")
    p.add_argument("--out", help="write the full table as CSV")
    p.set_defaults(func=_cmd_compare)
    p = sub.add_parser("stress", help="API cut-off stress test")
    p.add_argument("scenario")
    p.add_argument("--cutoff", choices=["US", "CN", "EU"], required=True,
                   help="bloc that stops serving its APIs")
    p.add_argument("--target", required=True,
                   help="comma-separated groups (e.g. LMC,LIC,NATO) or ISO3 codes")
    p.add_argument("--at", type=_month_arg, required=True, help="month of the cut-off, YYYY-MM")
    p.add_argument("--months", type=positive_int("--months", 1, 600), default=None,
                   help="duration (default: for good)")
    p.add_argument("--seed", type=positive_int("--seed", 0), default=1)
    p.add_argument("--firms", type=positive_int("--firms", 1000, 2_000_000), default=20_000)
    p.add_argument("--top", type=positive_int("--top", 0), default=10,
                   help="also list the N most disrupted countries")
    p.add_argument("--out", help="write the recovery curves as CSV")
    p.set_defaults(func=_cmd_stress)
    p = sub.add_parser("schema", help="print the scenario JSON schema")
    p.add_argument("--out", help="write to this file instead of stdout")
    p.add_argument("--markdown", action="store_true",
                   help="print the parameter table (as in docs/ODD.md) instead")
    p.set_defaults(func=_cmd_schema)


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every module's commands."""
    parser = argparse.ArgumentParser(
        prog="diffusim", description="Agent-based model of global AI adoption "
        f"({len(Levers.model_fields)} policy levers; see README).")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``diffusim`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ScenarioError, DataError, UsageError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
