"""Sensitivity and scenario discovery: methods checked on problems with known answers, then
``diffusim analyze`` on real (small) sweeps."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import yaml

from sim import cli
from sim.analysis import (
    analyze,
    morris_screening,
    parse_condition,
    prim_box,
    sobol_indices,
    tornado,
)
from sim.sweep import (
    MorrisDesign,
    SobolDesign,
    SweepError,
    load_sweep,
    read_results,
    run_sweep,
    sample_unit,
)

PNG = b"\x89PNG\r\n\x1a\n"


def ishigami(x: np.ndarray, a: float = 7.0, b: float = 0.1) -> np.ndarray:
    return np.sin(x[:, 0]) + a * np.sin(x[:, 1]) ** 2 + b * x[:, 2] ** 4 * np.sin(x[:, 0])


def ishigami_indices(a: float = 7.0, b: float = 0.1):
    """Analytic first-order and total indices of the Ishigami function."""
    v1 = 0.5 * (1 + b * math.pi**4 / 5) ** 2
    v2 = a**2 / 8
    v13 = b**2 * math.pi**8 * (1 / 18 - 1 / 50)
    v = v1 + v2 + v13
    return np.array([v1, v2, 0.0]) / v, np.array([v1 + v13, v2, v13]) / v


def test_sobol_indices_of_the_ishigami_function_match_their_analytic_values():
    problem = {"num_vars": 3, "names": ["x1", "x2", "x3"], "bounds": [[0.0, 1.0]] * 3}
    unit = sample_unit(SobolDesign(n=2048), problem, seed=1)
    assert unit.shape == (2048 * 5, 3)
    y = ishigami(-math.pi + 2 * math.pi * unit)
    res = sobol_indices(problem, y, seed=1)["indices"]
    s1, st = ishigami_indices()
    assert np.allclose(s1, [0.314, 0.442, 0.0], atol=1e-3), "the analytic values themselves"
    assert np.allclose(res["S1"], s1, atol=0.04), f"S1 {res['S1'].to_list()} vs {s1}"
    assert np.allclose(res["ST"], st, atol=0.04), f"ST {res['ST'].to_list()} vs {st}"
    assert (res["S1_conf"] > 0).all() and (res["S1_conf"] < 0.1).all(), "tight, non-zero CIs"


def test_second_order_sobol_finds_the_x1_x3_interaction():
    problem = {"num_vars": 3, "names": ["x1", "x2", "x3"], "bounds": [[0.0, 1.0]] * 3}
    unit = sample_unit(SobolDesign(n=1024, second_order=True), problem, seed=2)
    res = sobol_indices(problem, ishigami(-math.pi + 2 * math.pi * unit), second_order=True)
    pairs = {(r["parameter_1"], r["parameter_2"]): r["S2"] for r in res["pairs"].to_dicts()}
    s1, st = ishigami_indices()
    assert pairs[("x1", "x3")] == pytest.approx(st[0] - s1[0], abs=0.06)
    assert abs(pairs[("x1", "x2")]) < 0.06 and abs(pairs[("x2", "x3")]) < 0.06


def test_morris_ranks_a_linear_function_by_its_slopes():
    problem = {"num_vars": 3, "names": ["big", "small", "none"], "bounds": [[0.0, 1.0]] * 3}
    x = sample_unit(MorrisDesign(n=20, num_levels=4), problem, seed=3)
    y = 5 * x[:, 0] + 1 * x[:, 1] + 0 * x[:, 2]
    res = morris_screening(problem, x, y, num_levels=4)
    assert res["parameter"].to_list() == ["big", "small", "none"]
    assert res["mu_star"].to_list() == pytest.approx([5.0, 1.0, 0.0], abs=1e-9), \
        "elementary effects of a linear function are its slopes (per unit of range)"
    assert res["sigma"].to_list() == pytest.approx([0, 0, 0], abs=1e-9), "no non-linearity"


def test_tornado_sorts_one_at_a_time_swings():
    names = ["a", "b"]
    points = [[0.5, 1.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.0], [0.5, 2.0]]
    y = np.array([10.0, 9.0, 11.0, 4.0, 16.0])
    t = tornado(names, points, 0, y)
    assert t["parameter"].to_list() == ["b", "a"], "largest swing first"
    assert t["swing"].to_list() == [12.0, 2.0]
    assert t.row(0, named=True)["value_at_min"] == 0.0


def test_prim_finds_a_planted_box():
    rng = np.random.default_rng(4)
    x = pl.DataFrame({"x0": rng.random(1500), "x1": rng.random(1500), "x2": rng.random(1500)})
    y = ((x["x0"] > 0.6) & (x["x1"] < 0.3)).to_numpy()
    box = prim_box(x, y, min_density=0.9)
    lim = {r["parameter"]: r for r in box.limits.to_dicts()}
    assert set(lim) == {"x0", "x1"}, "x2 plays no part and stays unrestricted"
    assert lim["x0"]["min"] == pytest.approx(0.6, abs=0.05) and lim["x0"]["max"] > 0.99
    assert lim["x1"]["max"] == pytest.approx(0.3, abs=0.05) and lim["x1"]["min"] < 0.01
    assert box.density >= 0.9 and box.coverage >= 0.85


def test_prim_refuses_a_condition_that_never_or_always_holds():
    x = pl.DataFrame({"x0": np.linspace(0, 1, 50)})
    with pytest.raises(SweepError, match="both sides"):
        prim_box(x, np.ones(50, bool))


@pytest.mark.parametrize("text, parsed, holds", [
    ("share_CN_LMC > 0.5", ("share_CN_LMC", ">", 0.5), [False, False, True]),
    ("ai_adoption_WLD<=1e-1", ("ai_adoption_WLD", "<=", 0.1), [True, True, False]),
])
def test_conditions_parse(text, parsed, holds):
    c = parse_condition(text)
    assert (c.outcome, c.op, c.threshold) == parsed
    assert c(np.array([0.05, 0.1, 0.6])).tolist() == holds


@pytest.mark.parametrize("text", ["share_CN_LMC = 0.5", "share_CN_LMC > x", "> 0.5", ""])
def test_bad_conditions_are_refused(text):
    with pytest.raises(SweepError, match="--condition"):
        parse_condition(text)


# ---------------------------------------------------------------------------------------------
# real sweeps, end to end


def small_sweep(folder, design, parameters, seeds=1):
    (folder / "short.yaml").write_text("name: short\nend: 2027-12-01\n")
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump({
        "name": f"t-{design['kind']}", "scenario": "short.yaml", "parameters": parameters,
        "design": design, "seeds": seeds, "firms": 2000,
        "outcomes": ["share_CN_WLD", "share_US_WLD"], "dates": ["2026-12", "2027-12"]}))
    out = folder / "out"
    run_sweep(load_sweep(path), out, workers=1, progress=False)
    return out


TWO = {"assumptions.b_trust": {"low": 0.5, "high": 4.0},
       "levers.export_controls": {"low": 0.0, "high": 1.0}}


def test_analyze_a_sobol_sweep_prints_indices_and_saves_plots(tmp_path, capsys):
    out = small_sweep(tmp_path, {"kind": "sobol", "n": 8}, TWO)
    rep = analyze(out, outcome="share_CN_WLD")
    sob = rep.tables["sobol"]
    assert sob["parameter"].to_list() == list(TWO) and sob.columns[1:] == [
        "S1", "S1_conf", "ST", "ST_conf"]
    values = rep.tables["summary"]
    threshold = values["median"].item()
    code = cli.main(["analyze", str(out), "--outcome", "share_US_WLD", "--condition",
                     f"share_CN_WLD > {threshold}", "--date", "2027-12"])
    text = capsys.readouterr().out
    assert code == 0
    assert "Sobol indices" in text and "PRIM box" in text and "Spearman" in text
    for name in ("sobol_share_US_WLD_2027-12.png", "prim_share_CN_WLD_2027-12.png"):
        assert (out / "analysis" / name).read_bytes()[:8] == PNG, name
    assert (out / "analysis" / "sobol_share_US_WLD_2027-12.csv").is_file()
    res = read_results(out).filter((pl.col("outcome") == "share_CN_WLD")
                                   & (pl.col("date") == pl.date(2027, 12, 1)))
    n_cases = int((res["value"] > threshold).sum())
    assert f"cases of interest (share_CN_WLD > {threshold:g}): {n_cases};" in text, \
        "PRIM's cases come from the condition's outcome, not from --outcome"


def test_analyze_morris_and_oat_sweeps(tmp_path):
    (tmp_path / "m").mkdir()
    out = small_sweep(tmp_path / "m", {"kind": "morris", "n": 3, "num_levels": 4}, TWO)
    rep = analyze(out, outcome="share_US_WLD", date="2026-12")
    assert set(rep.tables["morris"]["parameter"]) == set(TWO)
    assert (out / "analysis" / "morris_share_US_WLD_2026-12.png").read_bytes()[:8] == PNG
    (tmp_path / "o").mkdir()
    out = small_sweep(tmp_path / "o", {"kind": "oat"}, {
        **TWO, "levers.meta_open_weights": {"levels": [True, False]}}, seeds=2)
    rep = analyze(out, outcome="share_CN_WLD")
    t = rep.tables["tornado"]
    assert set(t["parameter"]) == {*TWO, "levers.meta_open_weights"}
    assert (t["swing"] >= 0).all() and t["swing"].is_sorted(descending=True)
    assert (out / "analysis" / "tornado_share_CN_WLD_2027-12.png").read_bytes()[:8] == PNG


def test_analyze_errors_name_what_is_allowed(tmp_path, capsys):
    out = small_sweep(tmp_path, {"kind": "sobol", "n": 4}, TWO)
    assert cli.main(["analyze", str(out), "--outcome", "share_EU_WLD"]) == 2
    assert "kept: share_CN_WLD, share_US_WLD" in capsys.readouterr().err
    assert cli.main(["analyze", str(out), "--date", "2030-12"]) == 2
    assert "2026-12, 2027-12" in capsys.readouterr().err
    assert cli.main(["analyze", str(tmp_path / "nothing")]) == 2
    assert "no sweep.json" in capsys.readouterr().err
    next((out / "results" / "replicate=0").glob("*.parquet")).unlink()
    assert cli.main(["analyze", str(out)]) == 2
    assert "1 of 16 have no result" in capsys.readouterr().err
