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

COMMAND_MODULES: tuple[str, ...] = ("sim.cli",)


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
    from sim.scenario import Scenario

    text = json.dumps(Scenario.model_json_schema(), indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text)
    return 0


def register(sub) -> None:
    """Core commands: run, validate, schema."""
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
    p = sub.add_parser("schema", help="print the scenario JSON schema")
    p.add_argument("--out", help="write to this file instead of stdout")
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
    except (ScenarioError, DataError, UsageError) as exc:
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
