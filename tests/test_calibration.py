"""Calibration: target losses, the calibration file, the calibrated defaults, recovery.

Worked examples: a bound is free inside and penalised outside; an observed value is the CSV
row's value; the model's defaults are the calibrated medians; the fit recovers known parameters
from synthetic data made by the model.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from sim import calibration as C
from sim import targets as T
from sim.inputs import DATA_DIR
from sim.scenario import CALIBRATION_FILE, load_scenario

ROOT = Path(__file__).resolve().parents[1]


def make_target(kind: str, lo: float, hi: float | None = None, scale: str = "logit",
                tol: float = 0.25, weight: float = 1.0) -> T.Target:
    hi = lo if hi is None else hi
    return T.Target(id=f"test_{kind}", kind=kind, scale=scale, lo=lo, hi=hi, tolerance=tol,
                    weight=weight, reliability="M", window=(0, 0),
                    quantities=(T.obs("hf_new_derivatives_share", "CN"),), combine="value",
                    reduce="mean", why="", mismatch_why="", source="", caveat="",
                    windows=((0, 0),))


# --- target losses -----------------------------------------------------------------------

def test_lower_bound_is_free_inside_and_penalised_outside():
    t = make_target("lower", 0.5)
    assert t.loss(0.5) == 0 and t.loss(0.9) == 0, "a lower bound costs nothing at or above it"
    assert t.within(0.6) and not t.within(0.49), "within a bound means on its right side"
    assert t.loss(0.4) > 0, "below a lower bound is penalised"
    assert t.loss(0.3) > t.loss(0.4), "further below costs more"


def test_upper_bound_and_range():
    up = make_target("upper", 0.3)
    assert up.loss(0.1) == 0 and up.loss(0.35) > 0
    rng = make_target("range", 0.05, 0.10)
    assert rng.loss(0.07) == 0 and rng.within(0.07)
    assert rng.loss(0.2) > 0 and rng.loss(0.02) > 0 and not rng.within(0.2)


def test_point_loss_in_tolerance_units_and_huber_tail():
    t = make_target("point", 0.63, tol=0.25)
    z = float(t.transform(0.70) - t.transform(0.63)) / 0.25
    assert math.isclose(float(t.loss(0.70)), z ** 2, rel_tol=1e-9)
    assert t.within(0.66) and not t.within(0.85)
    # beyond HUBER_K tolerances the loss grows linearly, not as a square
    far1, far2 = 0.63, 0.999
    z2 = float(t.distance(far2)) / 0.25
    assert z2 > T.HUBER_K
    assert math.isclose(float(t.loss(far2)), 2 * T.HUBER_K * z2 - T.HUBER_K ** 2, rel_tol=1e-9)
    assert t.loss(far1) == 0


def test_ordering_is_a_lower_bound_on_the_ratio():
    spec = next(s for s in T.SPECS if s.kind == "order")
    t = T.build_target(spec)
    assert t.lo == t.hi == 1.0
    assert t.loss(1.2) == 0 and t.loss(0.8) > 0


# --- targets read their figures from the CSV rows ------------------------------------------

def _csv_value(ref: T.RowRef) -> tuple[float, str]:
    with (DATA_DIR / ref.file).open(newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            if (r["date"], r["metric"], r["region_or_family"]) == (ref.date, ref.metric,
                                                                   ref.group):
                return float(r["value"]), r["unit"]
    raise AssertionError(f"row {ref} not found")


def test_every_observed_value_comes_from_its_rows():
    targets = T.build_targets()
    assert len(targets) >= 30
    for t in targets:
        assert t.window[1] <= T.month_index(C.CALIBRATION_END), f"{t.id} is after 2025-12"
        if t.kind == "order":
            assert t.source, f"{t.id}: an ordering must say where it is read"
            continue
        raw = []
        for row in t.rows:
            v, unit = _csv_value(row.ref)
            scale = 0.01 if unit.startswith("percent") else (0.001 if unit.startswith("models")
                                                               else 1.0)
            raw.append(v * scale)
        if t.kind == "range":
            expect = sorted(raw) if "closed" not in t.rows[0].ref.group.lower() else \
                sorted([1 - raw[0], raw[1]])
            assert [t.lo, t.hi] == pytest.approx(expect), t.id
        else:
            spec = next(s for s in T.SPECS if s.id == t.id)
            expect = T.COMBINE[spec.combine][1](raw)
            assert t.observed == pytest.approx(expect), t.id
        assert t.reliability in ("H", "M", "L") and t.weight > 0 and t.tolerance > 0
        assert t.why, f"{t.id} must say why the output is a fair counterpart"


def test_a_lower_bound_row_cannot_be_used_as_a_point():
    spec = next(s for s in T.SPECS if s.id == "hf_stock_qwen_lb")
    with pytest.raises(ValueError, match="lower bound"):
        T.build_target(dataclasses.replace(spec, kind="point"))


def test_until_keeps_only_earlier_targets():
    early = T.build_targets(C.date(2025, 6, 1))
    assert early and all(t.end <= C.date(2025, 6, 1) for t in early)
    assert len(early) < len(T.build_targets())


# --- the calibration file -------------------------------------------------------------------

def _record() -> dict:
    return {"format_version": C.FORMAT_VERSION,
            "parameters": {"rho": 0.03, "b_trust": 2.5},
            "posterior": [{"rho": 0.02, "b_trust": 2.0}, {"rho": 0.04, "b_trust": 3.0},
                          {"rho": 0.03, "b_trust": 2.5}],
            "loss": 1.0, "targets": [], "data_hash": "x", "method": "test", "budget": 1,
            "seed": 1, "date": "2026-01-01", "package_version": "0"}


def test_calibration_file_round_trips(tmp_path):
    path = C.write_calibration(_record(), tmp_path / "parameters.json")
    assert C.read_calibration(path) == _record()
    assert [p.name for p in tmp_path.iterdir()] == ["parameters.json"], "no temporary left"


def test_posterior_scenarios_draw_from_the_posterior(tmp_path):
    path = C.write_calibration(_record(), tmp_path / "parameters.json")
    base = load_scenario(ROOT / "scenarios" / "baseline.yaml").with_values(
        {"assumptions.rho": 0.03, "assumptions.b_trust": 2.5})
    scs = C.posterior_scenarios(base, 3, seed=4, path=path)
    got = sorted((s.assumptions.rho, s.assumptions.b_trust) for s in scs)
    assert got == [(0.02, 2.0), (0.03, 2.5), (0.04, 3.0)], "k = posterior size: each set once"
    again = C.posterior_scenarios(base, 3, seed=4, path=path)
    assert [s.assumptions.rho for s in again] == [s.assumptions.rho for s in scs]
    mine = base.with_values({"assumptions.b_trust": 7.0})
    kept = C.posterior_scenarios(mine, 2, seed=1, path=path)
    assert all(s.assumptions.b_trust == 7.0 for s in kept), "a deliberate setting stays"


@pytest.mark.skipif(not CALIBRATION_FILE.is_file(), reason="no calibration file yet")
def test_model_defaults_are_the_calibrated_medians():
    data = C.read_calibration(CALIBRATION_FILE)
    sc = load_scenario(ROOT / "scenarios" / "baseline.yaml")
    for name, value in data["parameters"].items():
        assert getattr(sc.assumptions, name) == pytest.approx(value, rel=1e-12), name
    assert len(data["posterior"]) >= 50
    assert {t["id"] for t in data["targets"]} <= {t.id for t in T.build_targets()}
    fields = {"id", "observed", "simulated_median", "band_5", "band_95", "within", "loss"}
    assert all(fields <= set(t) for t in data["targets"])


def test_checkpoint_keeps_evaluations(tmp_path):
    cp = C.Checkpoint(tmp_path)
    x = np.array([0.1, 0.2])
    cp.save([x], [np.ones((1, 3))])
    again = C.Checkpoint(tmp_path)
    assert np.array_equal(again.done[x.tobytes()], np.ones((1, 3)))


# --- recovery on synthetic data -------------------------------------------------------------

TRUTH = {"rho": 0.03, "none_base": 10.0, "b_trust": 3.0}


@pytest.mark.slow
def test_recovers_known_parameters_from_synthetic_data(tmp_path):
    settings = C.Settings(budget=300, seed=3, n_seeds=1, n_firms=2000, particles=30,
                          params=tuple(TRUTH))
    targets = T.build_targets()
    base = json.dumps(C.base_scenario_data(), sort_keys=True, default=str)
    stats = C.simulate(base, TRUTH, C.common_seeds(999, 1), 2000).mean(axis=0)
    synth = C.synthetic_targets(targets, stats)
    rec = C.calibrate(settings, workers=1, checkpoint=tmp_path, progress=False, targets=synth)
    inside = 0
    for p in C.fitted_params(tuple(TRUTH)):
        q5, q50, q95 = rec["intervals_90"][p.name]
        inside += q5 <= TRUTH[p.name] <= q95
        assert abs(p.unit(q50) - p.unit(TRUTH[p.name])) < 0.25, \
            f"{p.name}: median {q50} is far from the truth {TRUTH[p.name]}"
    assert inside >= 2, f"the truth should fall in most 90% intervals: {rec['intervals_90']}"
    # resuming from the checkpoint replays the same calibration without new runs
    n_files = len(list(tmp_path.glob("batch-*.npz")))
    again = C.calibrate(settings, workers=1, checkpoint=tmp_path, progress=False, targets=synth)
    assert again["parameters"] == rec["parameters"], "deterministic for a given seed"
    assert len(list(tmp_path.glob("batch-*.npz"))) == n_files, "nothing recomputed"


def test_cli_has_the_calibration_commands():
    from sim.cli import COMMAND_MODULES, build_parser

    assert "sim.calibration" in COMMAND_MODULES
    parser = build_parser()
    args = parser.parse_args(["calibrate", "--budget", "500", "--workers", "2", "--seed", "3",
                              "--firms", "3000", "--until", "2025-06"])
    assert (args.budget, args.workers, args.seed, args.firms) == (500, 2, 3, 3000)
    assert args.until == C.date(2025, 6, 1)
    args = parser.parse_args(["report", "calibration", "--out", "x"])
    assert args.report == "calibration"
    with pytest.raises(SystemExit):
        parser.parse_args(["calibrate", "--until", "2026-03"])
