"""Sweeps as a user runs them: designs, outcomes, resuming after a kill, executors, bad input."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from sim import cli, sweep
from sim.sweep import (
    Store,
    SweepError,
    load_sweep,
    read_results,
    reduce_result,
    replicate_seeds,
    run_sweep,
)

ROOT = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).with_name("diffusim")
FIRMS = 2000

LHS = {
    "name": "t-lhs",
    "scenario": "short.yaml",
    "parameters": {
        "levers.export_controls": {"low": 0.0, "high": 1.0},
        "assumptions.b_cost": {"low": 0.3, "high": 1.2},
        "levers.meta_open_weights": {"levels": [True, False]},
    },
    "design": {"kind": "lhs", "n": 6},
    "seeds": 2,
    "seed": 7,
    "firms": FIRMS,
    "outcomes": ["share_CN_WLD", "share_US_LMC", "infra_dependency_US_LMC", "ai_adoption_WLD"],
    "dates": ["2026-12", "2027-12"],
}


def write_sweep(folder: Path, name: str = "sweep.yaml", **changes) -> Path:
    """A sweep file over a short (2023-01..2027-12) baseline, with ``changes`` applied."""
    (folder / "short.yaml").write_text("name: short\nend: 2027-12-01\n")
    spec = {**LHS, **changes}
    path = folder / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def lhs_reference(tmp_path_factory):
    """The LHS sweep run serially, uninterrupted: the reference the other executors must match."""
    folder = tmp_path_factory.mktemp("ref")
    path = write_sweep(folder)
    summary = run_sweep(load_sweep(path), folder / "out", workers=1, progress=False)
    assert summary.ok and summary.failed == 0
    return path, read_results(folder / "out")


# ---------------------------------------------------------------------------------------------
# designs


def plan_for(tmp_path, design, parameters=None, seeds=1):
    parameters = parameters or {
        "levers.export_controls": {"low": 0.2, "high": 0.9},
        "assumptions.policy_start_year": {"low": 2026, "high": 2030},
        "levers.meta_open_weights": {"levels": [True, False]},
    }
    return load_sweep(write_sweep(tmp_path, parameters=parameters, design=design, seeds=seeds))


@pytest.mark.parametrize("design, size", [
    # policy_start_year: 4 even steps over 2026..2030 round to 2026, 2027, 2029, 2030
    ({"kind": "grid", "levels": 4}, 4 * 4 * 2),
    ({"kind": "lhs", "n": 12}, 12),
    ({"kind": "sobol", "n": 8}, 8 * (3 + 2)),
    ({"kind": "sobol", "n": 8, "second_order": True}, 8 * (2 * 3 + 2)),
    ({"kind": "morris", "n": 5, "num_levels": 4}, 5 * (3 + 1)),
    ({"kind": "oat"}, 1 + 2 + 1 + 1),  # the base year 2026 is the low end: not run twice
])
def test_designs_have_the_promised_size_and_stay_inside_the_ranges(tmp_path, design, size):
    plan = plan_for(tmp_path, design, seeds=3)
    assert len(plan.points) == size, f"{design}: {len(plan.points)} points, expected {size}"
    assert plan.n_runs == 3 * size, "every point runs once per replicate seed"
    ec = np.array([p[0] for p in plan.points])
    year = [p[1] for p in plan.points]
    meta = [p[2] for p in plan.points]
    assert ec.min() >= 0.2 and ec.max() <= 0.9, "float parameter stays in [low, high]"
    assert all(isinstance(y, int) and 2026 <= y <= 2030 for y in year), "integer stays integer"
    assert set(meta) <= {True, False} and all(isinstance(m, bool) for m in meta)
    if design["kind"] in ("lhs", "sobol", "morris"):
        assert plan.unit.shape == (size, 3)
        assert set(meta) == {True, False}, "both levels of a boolean are sampled"


def test_latin_hypercube_puts_one_point_in_every_stratum(tmp_path):
    plan = plan_for(tmp_path, {"kind": "lhs", "n": 20})
    strata = np.floor(plan.unit * 20).astype(int)
    for j in range(3):
        assert sorted(strata[:, j]) == list(range(20)), f"column {j}: one point per stratum"


def test_sobol_and_morris_designs_are_salibs_samples(tmp_path):
    from SALib.sample import morris, sobol

    plan = plan_for(tmp_path, {"kind": "sobol", "n": 16})
    problem = sweep.unit_problem(plan.names)
    seed = sweep._seed_of(plan.spec.seed, 0)
    assert np.array_equal(plan.unit, sobol.sample(problem, 16, calc_second_order=False,
                                                  seed=seed))
    plan = plan_for(tmp_path, {"kind": "morris", "n": 4, "num_levels": 4})
    assert np.array_equal(plan.unit, morris.sample(problem, 4, num_levels=4, seed=seed))
    grid = [0.2 + k * 0.7 / 3 for k in range(4)]
    assert all(np.isclose(grid, p[0]).any() for p in plan.points), "Morris uses a 4-level grid"


def test_oat_design_moves_one_parameter_at_a_time_around_the_base(tmp_path):
    plan = plan_for(tmp_path, {"kind": "oat"})
    centre = plan.points[plan.centre]
    assert centre[0] == 0.55, "the base value 0.0 is outside [0.2, 0.9]: the midpoint is used"
    for p in plan.points[1:]:
        assert sum(a != b for a, b in zip(p, centre)) == 1, f"{p} differs from {centre} in one"
    assert centre[1] == 2026 and centre[2] is True, "centre is the base scenario's value"


def test_explicit_list_design_and_fixed_values(tmp_path):
    plan = load_sweep(write_sweep(
        tmp_path, parameters={}, fixed={"assumptions.rho": 0.1},
        design={"kind": "list", "points": [{"export_controls": 0.1, "b_cost": 1.0},
                                           {"export_controls": 0.9, "b_cost": 0.5}]}))
    assert plan.names == ["levers.export_controls", "assumptions.b_cost"], "bare names resolved"
    assert plan.points == [(0.1, 1.0), (0.9, 0.5)]
    assert plan.base.assumptions.rho == 0.1, "fixed values reach the base scenario"


def test_replicate_seeds_come_from_the_sweep_seed_and_are_shared_by_every_point():
    assert replicate_seeds(7, 3) == replicate_seeds(7, 3), "deterministic"
    assert replicate_seeds(7, 5)[:3] == replicate_seeds(7, 3), "more replicates keep the first"
    assert replicate_seeds(8, 3) != replicate_seeds(7, 3)
    assert len(set(replicate_seeds(7, 100))) == 100


def test_dates_every_k_months(tmp_path):
    spec = {k: v for k, v in LHS.items() if k != "dates"}
    (tmp_path / "short.yaml").write_text("name: short\nend: 2027-12-01\n")
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump({**spec, "every": 12}))
    plan = load_sweep(path)
    assert [d.isoformat()[:7] for d in plan.dates] == [f"{y}-12" for y in range(2023, 2028)]
    path.write_text(yaml.safe_dump({**spec, "every": 7}))
    assert load_sweep(path).dates[-1].isoformat()[:7] == "2027-12", "the last month is kept"


# ---------------------------------------------------------------------------------------------
# outcomes


def test_outcome_patterns_expand_to_names_and_unknown_names_are_refused():
    names = sweep.expand_outcomes(["share_*_WLD", "ai_adoption_WLD"], "t")
    assert names[:5] == ["share_US_WLD", "share_CN_WLD", "share_EU_WLD", "share_OTHER_WLD",
                         "share_NONE_WLD"]
    assert "share_open_weight_WLD" in names and names[-1] == "ai_adoption_WLD"
    with pytest.raises(SweepError, match="did you mean share_CN_WLD"):
        sweep.expand_outcomes(["share_CN_WDL"], "t")


def test_reduced_outcomes_equal_the_full_result_frames(baseline):
    from sim import run

    sc = baseline.with_values({"levers.export_controls": 0.5})
    result = run(sc, seed=3, n_firms=FIRMS)
    names = ("share_CN_WLD", "share_open_weight_LMC", "share_NONE_DEU", "share_OTHER_WLD",
             "infra_dependency_US_LMC", "model_dependency_CN_WLD", "dependency_CN_LIC",
             "ai_adoption_UMC", "hhi_providers_WLD", "majority_countries_CN",
             "hf_downloads_share_CN", "api_token_share_open_closed_open")
    idx = (35, 155)
    got = reduce_result(result, names, idx)
    assert got.shape == (2, len(names))
    for i, t in enumerate(idx):
        d = result.dates[t]
        ad = result.adoption.filter(pl.col("date") == d)
        dep = result.dependency.filter(pl.col("date") == d)
        k = result.kpis.filter(pl.col("date") == d)
        ob = result.observables.filter(pl.col("date") == d)

        def sel(df, **eq):
            return df.filter(pl.all_horizontal([pl.col(c) == v for c, v in eq.items()]))

        expect = [
            sel(ad, region="WLD", bloc="CN")["share"].sum(),
            sel(ad, region="LMC", access="open_weight")["share"].sum(),
            sel(ad, region="DEU", bloc="NONE")["share"].sum(),
            0.0,
            sel(dep, region="LMC", bloc="US")["infra_dependency"].item(),
            sel(dep, region="WLD", bloc="CN")["model_dependency"].item(),
            sel(dep, region="LIC", bloc="CN").select(
                pl.col("infra_dependency") + pl.col("model_dependency")).item(),
            sel(k, region="UMC", metric="ai_adoption")["value"].item(),
            sel(k, region="WLD", metric="hhi_providers")["value"].item(),
            sel(k, metric="majority_countries_CN")["value"].item(),
            sel(ob, metric="hf_downloads_share", group="CN")["value"].item(),
            sel(ob, metric="api_token_share_open_closed", group="open")["value"].item(),
        ]
        assert np.allclose(got[i], expect, atol=1e-12), dict(zip(names, zip(got[i], expect)))


# ---------------------------------------------------------------------------------------------
# running, storing, resuming


def test_results_are_tidy_rows_with_run_seed_and_parameters(lhs_reference):
    _, df = lhs_reference
    assert df.columns[:8] == ["run_id", "replicate", "point", "seed", "date", "outcome", "value",
                              "scenario"]
    assert {"levers.export_controls", "assumptions.b_cost", "levers.meta_open_weights"} <= \
        set(df.columns)
    assert df.height == 6 * 2 * 2 * 4, "runs x dates x outcomes"
    assert df.select("run_id", "date", "outcome").is_duplicated().sum() == 0
    seeds = df.group_by("replicate").agg(pl.col("seed").n_unique())
    assert (seeds["seed"] == 1).all(), "a replicate has the same seed at every point (CRN)"
    assert sorted(df["seed"].unique()) == sorted(replicate_seeds(7, 2))
    assert df["value"].is_between(0, 1).all()


def test_sweep_json_describes_the_sweep(lhs_reference, tmp_path):
    from sim.inputs import data_hash

    path, _ = lhs_reference
    meta = json.loads((path.parent / "out" / "sweep.json").read_text())
    assert meta["status"] == "complete" and meta["runs"] == {"total": 12, "done": 12,
                                                            "failed": 0}
    assert meta["data_hash"] == data_hash()
    assert meta["git_commit"] and meta["versions"]["numpy"] and meta["versions"]["diffusim"]
    assert meta["design"]["kind"] == "lhs" and len(meta["design"]["points"]) == 6
    assert meta["design"]["seeds"] == replicate_seeds(7, 2)
    assert meta["timings"]["model_s"] > 0 and meta["sessions"][0]["executor"] == "serial"


@pytest.mark.slow
def test_serial_processes_and_dask_give_the_same_results(lhs_reference, tmp_path):
    from dask.distributed import LocalCluster

    path, reference = lhs_reference
    plan = load_sweep(path)
    s = run_sweep(plan, tmp_path / "proc", workers=2, progress=False)
    assert s.session["executor"] == "processes" and s.ok
    assert read_results(tmp_path / "proc").equals(reference), "local processes = serial"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        s = run_sweep(plan, tmp_path / "dask", scheduler=cluster.scheduler_address,
                      progress=False)
    assert s.session["executor"] == "dask" and s.ok
    assert read_results(tmp_path / "dask").equals(reference), "Dask = serial"


def children(pid: int) -> list[int]:
    """Child processes of ``pid`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def files_of(out: Path) -> list[Path]:
    return sorted((out / "results").glob("replicate=*/*.parquet"))


@pytest.mark.slow
def test_a_sweep_killed_with_sigkill_resumes_to_the_uninterrupted_results(tmp_path):
    path = write_sweep(tmp_path, design={"kind": "grid", "levels": 6},
                       parameters={"levers.export_controls": {"low": 0.0, "high": 1.0},
                                   "assumptions.b_cost": {"low": 0.3, "high": 1.2}},
                       seeds=2)  # 72 runs
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "sim.cli", "sweep", str(path), "--out", str(out), "--quiet"]
    # kill twice, at different places: serially, then with two worker processes
    for at_least, workers in ((3, "1"), (20, "2")):
        proc = subprocess.Popen([*cmd, "--workers", workers], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while len(files_of(out)) < at_least and time.monotonic() < deadline:
            assert proc.poll() is None, "the sweep ended before it could be killed"
            time.sleep(0.005)
        kids = children(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        n = len(files_of(out))
        assert at_least <= n < 72, f"killed mid-way ({n} of 72 runs written)"
        for f in files_of(out):  # every file there is whole
            assert pl.read_parquet(f).height == 2 * 4
        deadline = time.monotonic() + 30
        while any(alive(k) for k in kids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(alive(k) for k in kids), "worker processes exit with their sweep"
    p = subprocess.run([str(EXE), *cmd[3:], "--workers", "1"], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert f"{72 - n} runs now, {n} before" in p.stdout, p.stdout
    assert not list(out.rglob(".tmp-*")), "no temporary file left"
    reference = tmp_path / "whole"
    run_sweep(load_sweep(path), reference, workers=1, progress=False)
    got, want = read_results(out), read_results(reference)
    assert got.select("run_id").n_unique() == 72, "no run lost"
    assert got.equals(want), "resumed results equal those of an uninterrupted sweep"
    meta = json.loads((out / "sweep.json").read_text())
    assert meta["status"] == "complete" and len(meta["sessions"]) == 3


def test_a_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch, capsys):
    path = write_sweep(tmp_path)
    real = sweep.simulate

    def flaky(base_json, values, seed, *rest):
        if values["levers.meta_open_weights"] is False and seed == replicate_seeds(7, 2)[1]:
            raise FloatingPointError("planted failure")
        return real(base_json, values, seed, *rest)

    monkeypatch.setattr(sweep, "simulate", flaky)
    out = tmp_path / "out"
    code = cli.main(["sweep", str(path), "--out", str(out), "--workers", "1"])
    err = capsys.readouterr().err
    n_failed = sum(1 for p in load_sweep(path).points if p[2] is False)
    assert code == 1 and f"{n_failed} runs failed" in err
    assert "failed=" in err and "run/s" in err, "progress bar with failures and rate"
    records = [json.loads(f.read_text()) for f in (out / "failures").glob("*.json")]
    assert len(records) == n_failed
    assert all(r["error"] == "FloatingPointError: planted failure" for r in records)
    assert all(r["parameters"]["levers.meta_open_weights"] is False for r in records)
    assert len(files_of(out)) == 12 - n_failed, "every other run was written"
    monkeypatch.setattr(sweep, "simulate", real)
    assert cli.main(["sweep", str(path), "--out", str(out), "--workers", "1", "--quiet"]) == 0
    assert not list((out / "failures").glob("*.json")), "a run that succeeds clears its record"
    assert len(files_of(out)) == 12


class FullDisk:
    """``os`` with a disk that fills up after ``room`` more writes."""

    def __init__(self, room: int):
        self.room = room

    def __getattr__(self, name):
        return getattr(os, name)

    def write(self, fd, data):
        if self.room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= 1
        return os.write(fd, data)


def test_a_full_disk_stops_with_a_clear_message_and_keeps_what_was_written(
        tmp_path, monkeypatch, capsys, lhs_reference):
    path = write_sweep(tmp_path)
    out = tmp_path / "out"
    monkeypatch.setattr(sweep, "os", FullDisk(room=1 + 5))  # sweep.json, then 5 runs
    code = cli.main(["sweep", str(path), "--out", str(out), "--workers", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "No space left on device" in err and "resume" in err, err
    assert "Traceback" not in err
    assert len(files_of(out)) == 5
    assert not list(out.rglob(".tmp-*")), "the half-written file was removed"
    json.loads((out / "sweep.json").read_text())  # still whole
    monkeypatch.setattr(sweep, "os", os)
    assert cli.main(["sweep", str(path), "--out", str(out), "--workers", "1", "--quiet"]) == 0
    assert read_results(out).equals(lhs_reference[1])


def test_a_folder_holding_another_sweep_or_in_use_is_refused(lhs_reference, tmp_path, capsys):
    path, _ = lhs_reference
    out = path.parent / "out"
    before = sorted(f.stat().st_mtime_ns for f in files_of(out))
    other = write_sweep(tmp_path, seeds=3)
    assert cli.main(["sweep", str(other), "--out", str(out), "--quiet"]) == 2
    assert "holds a different sweep" in capsys.readouterr().err
    assert cli.main(["sweep", str(path), "--out", str(out), "--firms", "3000", "--quiet"]) == 2
    assert "--firms" in capsys.readouterr().err
    store = Store(out)
    store.open()
    try:
        assert cli.main(["sweep", str(path), "--out", str(out), "--quiet"]) == 2
        assert "another sweep is writing" in capsys.readouterr().err
    finally:
        store.close()
    assert sorted(f.stat().st_mtime_ns for f in files_of(out)) == before, "nothing rewritten"


# ---------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("changes, expected", [
    ({"design": {"kind": "lhs", "n": 6, "size": 3}},
     ["design.lhs.size", "unknown key; valid keys here: kind, n"]),
    ({"sedds": 2}, ["sedds", "unknown key", "seeds"]),
    ({"parameters": {"levers.export_controls": {"low": 0.8, "high": 0.2}}},
     ["parameters.levers.export_controls", "low 0.8 must be below high 0.2"]),
    ({"parameters": {"levers.export_controls": {"low": 0, "high": 1.5}}},
     ["parameters.levers.export_controls.high", "1.5", "0 to 1"]),
    ({"parameters": {"levers.exprt_controls": {"low": 0, "high": 1}}},
     ["unknown parameter 'levers.exprt_controls'", "did you mean levers.export_controls"]),
    ({"parameters": {"levers.meta_open_weights": {"low": 0, "high": 1}}},
     ["levers.meta_open_weights", "levels: [true, false]"]),
    ({"parameters": {"levers.cn_licence_change": {"low": 0, "high": 1}}},
     ["levers.cn_licence_change", "only numbers and true/false"]),
    ({"design": {"kind": "sobol", "n": 10}}, ["design.n", "power of 2"]),
    ({"design": {"kind": "anneal"}}, ["design", "anneal", "grid"]),
    ({"outcomes": ["share_CN_Wrld"]}, ["outcomes", "unknown outcome 'share_CN_Wrld'"]),
    ({"dates": ["2031-12"]}, ["dates", "2031-12", "2023-01 to 2027-12"]),
    ({"dates": ["2031-13"]}, ["dates.0", "YYYY-MM"]),
    ({"every": 12}, ["dates and every"]),
    ({"scenario": "missing.yaml"}, ["scenario", "missing.yaml", "no such scenario file"]),
    ({"seeds": 0}, ["seeds", "greater than or equal to 1"]),
    ({"fixed": {"assumptions.rho": 7}}, ["fixed.assumptions.rho", "0.005 to 1"]),
])
def test_bad_sweep_files_give_one_clear_error_and_exit_2(tmp_path, capsys, changes, expected):
    path = write_sweep(tmp_path, **changes)
    out = tmp_path / "out"
    assert cli.main(["sweep", str(path), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err, f"the message names the file: {err}"
    for text in expected:
        assert text in err, f"{text!r} not in {err!r}"
    assert not out.exists(), "nothing is written for an invalid sweep file"


def test_malformed_yaml_and_a_missing_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nparameters: [\n")
    assert cli.main(["sweep", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "malformed YAML at line" in capsys.readouterr().err
    assert cli.main(["sweep", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "no such sweep file" in capsys.readouterr().err


def test_an_unreachable_scheduler_and_an_unwritable_folder_exit_2(tmp_path):
    path = write_sweep(tmp_path)
    p = subprocess.run([str(EXE), "sweep", str(path), "--out", str(tmp_path / "o"),
                        "--scheduler", "tcp://127.0.0.1:9", "--connect-timeout", "1"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "cannot reach the Dask scheduler" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    assert not files_of(tmp_path / "o")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    p = subprocess.run([str(EXE), "sweep", str(path), "--out", str(blocker / "sub")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "--out" in p.stderr and "cannot write" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_example_sweep_files_are_valid():
    files = sorted((ROOT / "scenarios" / "sweeps").glob("*.yaml"))
    kinds = {load_sweep(f).spec.design.kind for f in files}
    assert {"grid", "lhs", "sobol", "morris", "oat"} <= kinds
    small = load_sweep(ROOT / "scenarios" / "sweeps" / "small.yaml")
    assert small.n_runs <= 200 and small.n_firms <= 5000, "the small example stays small"


def test_workers_and_scheduler_exclude_each_other(tmp_path, capsys):
    path = write_sweep(tmp_path)
    args = ["sweep", str(path), "--out", str(tmp_path / "o"), "--workers", "2",
            "--scheduler", "tcp://127.0.0.1:9"]
    assert cli.main(args) == 2
    assert "--workers and --scheduler exclude each other" in capsys.readouterr().err


def test_docs_describe_every_outcome_quantity_and_design():
    text = (ROOT / "docs" / "sweeps.md").read_text()
    for quantity in sweep.QUANTITIES:
        assert f"| `{quantity}` |" in text, f"docs/sweeps.md outcome table lacks {quantity}"
    for kind in sweep.DESIGNS:
        assert f"| `{kind}` |" in text, f"docs/sweeps.md design table lacks {kind}"
