"""Scenario files: presets validate and run, bad input gives one clear message, YAML round-trips."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sim import ScenarioError, load_scenario, parse_yaml, run
from sim.comparison import compare
from sim.scenario import Scenario

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "scenarios").glob("*.yaml"))
EXE = Path(sys.executable).with_name("diffusim")


def test_every_preset_named_in_the_issue_exists():
    names = {p.stem for p in PRESETS}
    assert {"baseline", "export_controls", "us_open_push", "meta_closed", "security_shock",
            "data_localisation", "us_cutoff", "cn_licence_tightening", "sovereign_south",
            "convergence"} <= names


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_validates_runs_and_tells_its_story(path):
    sc = load_scenario(path)
    assert sc.name == path.stem
    assert len(sc.description) > 150, "each preset carries a narrative with its inspiration"
    result = run(sc, seed=1, n_firms=2000)
    assert result.adoption.height > 0


def test_yaml_round_trip_keeps_every_setting():
    sc = load_scenario(ROOT / "scenarios" / "sovereign_south.yaml")
    again = parse_yaml(sc.to_yaml())
    assert again == sc
    assert again.events[1].kind == "trigger"


def test_comparing_a_scenario_with_itself_gives_exactly_zero():
    sc = load_scenario(ROOT / "scenarios" / "baseline.yaml")
    table = compare(sc, sc, seeds=[1, 2], n_firms=2000)
    assert table.height > 20
    assert (table["delta"] == 0).all() and (table["delta_p95"] == 0).all()


def test_compare_prints_deltas_for_a_preset():
    p = subprocess.run([str(EXE), "compare", "scenarios/baseline.yaml",
                        "scenarios/us_cutoff.yaml", "--seeds", "2", "--firms", "2000"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "us_cutoff minus baseline" in p.stdout and "share_US_LMC_2030" in p.stdout


def test_stress_command_reports_disruption_and_recovery():
    p = subprocess.run([str(EXE), "stress", "scenarios/baseline.yaml", "--cutoff", "US",
                        "--target", "LMC,LIC", "--at", "2027-01", "--firms", "3000"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "disrupted_share" in p.stdout and "months_to_90" in p.stdout
    assert "LMC" in p.stdout


def test_validate_command_passes_on_presets_and_fails_on_bad(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nlevers: {export_controls: -1}\n")
    p = subprocess.run([str(EXE), "validate", *map(str, PRESETS)], capture_output=True,
                       text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    p = subprocess.run([str(EXE), "validate", str(bad)], capture_output=True, text=True)
    assert p.returncode == 2 and "levers.export_controls" in p.stderr


BAD = {
    "unknown key": ("levers: {export_control: 0.5}\n",
                    ["levers.export_control", "unknown key", "export_controls"]),
    "unknown top-level key": ("lever: {}\n", ["lever", "unknown key", "levers"]),
    "wrong type": ("levers: {export_controls: strong}\n",
                   ["levers.export_controls", "valid number", "'strong'"]),
    "out of range": ("assumptions: {rho: 2}\n", ["assumptions.rho", "less than or equal to 1",
                                                  "2"]),
    "end before start": ("events:\n- {kind: ban, bloc: CN, start: 2028-01-01, end: 2027-01-01}"
                         "\n", ["events.0.ban", "end 2027-01-01 must be after start"]),
    "unknown ISO3": ("events:\n- {kind: ban, bloc: CN, start: 2027-01-01, target: "
                     "{countries: [XXX]}}\n", ["events.0.ban.target.countries",
                                               "unknown ISO3", "XXX"]),
    "unknown group": ("events:\n- {kind: cutoff, bloc: US, start: 2027-01-01, target: "
                      "{groups: [GLOBAL_SOUTH]}}\n", ["target.groups", "GLOBAL_SOUTH", "LMC"]),
    "unknown event kind": ("events:\n- {kind: embargo, start: 2027-01-01}\n",
                           ["events.0", "embargo", "ban"]),
    "unknown sector": ("events:\n- {kind: ban, bloc: US, start: 2027-01-01, target: "
                       "{sectors: [military]}}\n", ["sectors", "military", "government"]),
    "malformed YAML": ("levers: {export_controls: 0.5\n", ["malformed YAML", "line"]),
    "empty file": ("", ["empty scenario"]),
    "not a mapping": ("- just\n- a list\n", ["top level must be a mapping"]),
    "end of run out of range": ("end: 2099-01-01\n", ["end 2099-01-01"]),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_input_gets_one_clear_message(case, tmp_path):
    text, needles = BAD[case]
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as exc:
        load_scenario(path)
    msg = str(exc.value)
    assert str(path) in msg, "the message names the file"
    for needle in needles:
        assert needle in msg, f"{case}: {needle!r} missing from {msg!r}"


def test_huge_file_is_refused_before_parsing(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("description: '" + "x" * 1_100_000 + "'\n")
    with pytest.raises(ScenarioError, match="at most 1000000 bytes"):
        load_scenario(path)


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(ScenarioError, match="no such scenario file"):
        load_scenario(tmp_path / "nope.yaml")


def test_cli_error_has_no_traceback_and_writes_nothing(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("levers: {export_controls: 0.5\n")
    out = tmp_path / "out"
    p = subprocess.run([str(EXE), "run", str(path), "--out", str(out)], capture_output=True,
                       text=True)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "malformed YAML" in p.stderr
    assert not out.exists()


def test_with_values_rejects_unknown_parameters():
    sc = Scenario()
    with pytest.raises(ScenarioError, match="unknown parameter 'levers.nope'"):
        sc.with_values({"levers.nope": 1})
    with pytest.raises(ScenarioError, match="levers.export_controls"):
        sc.with_values({"levers.export_controls": 5})


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True)
    | st.text(max_size=20) | st.dates().map(str),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["name", "levers", "assumptions", "events", "kind", "start", "end",
                         "target", "bloc", "export_controls", "rho", "countries", "groups",
                         "size", "x"]) | st.text(max_size=8), inner, max_size=5),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(yaml_values)
def test_fuzzed_documents_either_validate_or_raise_scenario_error(doc):
    text = yaml.safe_dump(doc)
    try:
        parse_yaml(text, "fuzz")
    except ScenarioError as exc:
        assert str(exc).startswith("fuzz"), "every message names its source"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzzed_bytes_either_validate_or_raise_scenario_error(raw):
    try:
        parse_yaml(raw, "bytes")
    except ScenarioError:
        pass
