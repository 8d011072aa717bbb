"""The ``diffusim`` command line, end to end, in a subprocess as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).with_name("diffusim")


def diffusim(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(EXE), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_run_writes_the_four_contract_files(tmp_path):
    out = tmp_path / "baseline"
    p = diffusim("run", "scenarios/baseline.yaml", "--seed", "1", "--firms", "2000",
                 "--out", str(out))
    assert p.returncode == 0, p.stderr
    for name in ("adoption.parquet", "observables.parquet", "dependency.parquet",
                 "manifest.json"):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 1 and manifest["n_firms"] == 2000
    adoption = pl.read_parquet(out / "adoption.parquet")
    assert adoption["date"].min().isoformat() == "2023-01-01"
    assert adoption["date"].max().isoformat() == "2035-12-01"
    assert "world shares" in p.stdout
    assert not list(out.glob(".tmp-*")), "no temporary folder left behind"


def test_bad_scenario_gives_one_clear_error_and_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("levers:\n  export_controls: 3\n  exprt_controls: 1\n")
    p = diffusim("run", str(bad), "--out", str(tmp_path / "o"))
    assert p.returncode == 2
    assert "levers.export_controls" in p.stderr and "less than or equal to 1" in p.stderr
    assert "levers.exprt_controls" in p.stderr and "unknown key" in p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "o").exists(), "nothing written for an invalid scenario"


def test_bad_firm_count_and_seed_are_refused():
    p = diffusim("run", "scenarios/baseline.yaml", "--firms", "10", "--out", "/tmp/x")
    assert p.returncode == 2 and "--firms" in p.stderr
    p = diffusim("run", "scenarios/baseline.yaml", "--seed", "-3", "--out", "/tmp/x")
    assert p.returncode == 2 and "--seed" in p.stderr


def test_unwritable_output_folder_is_reported(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    p = diffusim("run", "scenarios/baseline.yaml", "--firms", "1000", "--out",
                 str(blocker / "sub"))
    assert p.returncode == 2 and "--out" in p.stderr and "Traceback" not in p.stderr


def test_schema_is_exported():
    p = diffusim("schema")
    assert p.returncode == 0
    schema = json.loads(p.stdout)
    assert "levers" in schema["properties"]
