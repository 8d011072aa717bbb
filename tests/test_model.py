"""Worked examples of the model core: invariants, bans, releases, reproducibility."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from sim import DiffusionModel, run
from sim.model import default_measured
from sim.providers import INDEX, PROVIDER_IDS, PROVIDERS
from sim.scenario import Ban, Target

from .conftest import SMALL


def test_adoption_shares_sum_to_one_for_every_month_and_region(baseline_result):
    sums = baseline_result.adoption.group_by("date", "region").agg(pl.col("share").sum())
    assert sums.height == 156 * (193 + 5), "one row group per month x region (countries, WLD, 4)"
    assert np.allclose(sums["share"].to_numpy(), 1.0), "shares of every (date, region) sum to 1"
    assert baseline_result.adoption["share"].min() >= 0


def test_adoption_frame_follows_the_contract(baseline_result):
    df = baseline_result.adoption
    assert df.columns == ["date", "region", "provider", "bloc", "access", "share"]
    assert df.schema["date"] == pl.Date
    assert set(df["bloc"].unique()) <= {"US", "CN", "EU", "OTHER", "NONE"}
    assert set(df["access"].unique()) == {"api", "open_weight", "none"}
    assert {"WLD", "HIC", "UMC", "LMC", "LIC", "USA", "CHN", "IDN"} <= set(df["region"].unique())
    none = df.filter(pl.col("provider") == "none")
    assert (none["bloc"] == "NONE").all() and (none["access"] == "none").all()


def test_observable_shares_sum_to_one_per_date(baseline_result):
    obs = baseline_result.observables
    assert obs.columns == ["date", "metric", "group", "value"]
    from sim.outcomes import SHARE_METRICS

    for metric in SHARE_METRICS:
        sums = obs.filter(pl.col("metric") == metric).group_by("date").agg(pl.col("value").sum())
        late = sums.filter(pl.col("date") >= pl.date(2024, 1, 1))
        assert np.allclose(late["value"].to_numpy(), 1.0), f"{metric} sums to 1 once it exists"


def test_dependency_is_a_share_of_ai_usage(baseline_result):
    dep = baseline_result.dependency
    assert dep.columns == ["date", "region", "bloc", "infra_dependency", "model_dependency"]
    total = dep.group_by("date", "region").agg(
        (pl.col("infra_dependency") + pl.col("model_dependency")).sum().alias("t"))
    adoption = baseline_result.kpis.filter(pl.col("metric") == "ai_adoption")
    both = total.join(adoption, on=["date", "region"])
    using = both.filter(pl.col("value") > 0)["t"].to_numpy()
    idle = both.filter(pl.col("value") == 0)["t"].to_numpy()
    assert using.size > 0 and np.allclose(using, 1.0), \
        "where firms use AI, infra + model dependency over blocs covers all of it"
    assert np.all(idle == 0), "where no firm uses AI yet, there is no dependency"


def test_no_provider_is_used_before_its_release(baseline_result):
    entry = dict(zip(PROVIDER_IDS, default_measured().entry))
    df = baseline_result.adoption.filter(pl.col("region") == "WLD", pl.col("provider") != "none")
    for pid, first in entry.items():
        before = df.filter(pl.col("provider") == pid).head(max(first, 0))
        assert (before["share"] == 0).all(), f"{pid} has users before its market entry"
    gpt_oss = df.filter(pl.col("provider") == "gpt_oss", pl.col("date") < pl.date(2025, 8, 1))
    assert (gpt_oss["share"] == 0).all(), "gpt-oss (released 2025-08-05) unused before"


def test_bans_are_never_violated_by_any_firm(baseline):
    sc = baseline.model_copy(update={"events": [
        Ban(start="2024-06-01", bloc="CN", target=Target(groups=["NATO"])),
        Ban(start="2025-01-01", providers=["openai"], target=Target(countries=["IND"],
                                                                      sectors=["finance"])),
    ], "end": baseline.end.replace(year=2027)})
    model = DiffusionModel(sc, seed=3, n_firms=SMALL)
    f = model.firms
    while model.t < model.n_months:
        model.step()
        blocked = model.policies.month(model.t - 1)["blocked"]
        using = f.current < len(PROVIDERS)
        bad = using.copy()
        bad[using] = blocked[f.country[using], f.sector[using], f.current[using]]
        assert not bad.any(), f"{bad.sum()} firms use a banned provider in month {model.t - 1}"
    nato = np.array(model.countries.members["NATO"])
    cn = np.array([p.bloc == "CN" for p in PROVIDERS])
    on_cn = cn[np.minimum(f.current, len(PROVIDERS) - 1)] & (f.current < len(PROVIDERS))
    assert not (on_cn & nato[f.country]).any(), "no firm in a NATO country uses Chinese models"


def test_recorded_deepseek_restriction_applies_in_italy(baseline_result):
    ita = baseline_result.adoption.filter(pl.col("region") == "ITA",
                                          pl.col("provider") == "deepseek_api",
                                          pl.col("date") >= pl.date(2025, 1, 1))
    assert (ita["share"] == 0).all(), "Italy's Garante blocked DeepSeek's service (2025-01)"


def test_same_seed_gives_bit_identical_files(baseline, tmp_path):
    a = run(baseline, seed=7, n_firms=SMALL).write(tmp_path / "a")
    b = run(baseline, seed=7, n_firms=SMALL).write(tmp_path / "b")
    for name in ("adoption", "observables", "dependency", "ecosystem", "kpis", "policies",
                 "cutoff"):
        assert (a / f"{name}.parquet").read_bytes() == (b / f"{name}.parquet").read_bytes(), name
    import json

    ma = json.loads((a / "manifest.json").read_text())
    mb = json.loads((b / "manifest.json").read_text())
    ma.pop("wall_time_s")
    mb.pop("wall_time_s")
    assert ma == mb


def test_different_seeds_differ(baseline):
    a = run(baseline, seed=1, n_firms=SMALL).adoption["share"].to_numpy()
    b = run(baseline, seed=2, n_firms=SMALL).adoption["share"].to_numpy()
    assert not np.array_equal(a, b)


def test_manifest_describes_the_run(baseline_result):
    m = baseline_result.manifest
    for key in ("format_version", "package_version", "git_commit", "scenario", "seed",
                "n_firms", "parameters", "data_hash", "wall_time_s"):
        assert key in m, key
    assert m["n_firms"] == SMALL and m["seed"] == 1
    assert "assumptions.b_cost" in m["parameters"] and "levers.export_controls" in m["parameters"]
    assert len(m["data_hash"]) == 64


def test_countries_are_the_un_members(baseline_result):
    from sim.countries import default_countries

    tab = default_countries()
    assert tab.n == 193 and "USA" in tab.iso3 and "CHN" in tab.iso3
    assert np.isfinite(tab.gdp).all() and (tab.gdp > 0).all()


def test_firm_weights_sum_to_country_gdp(baseline):
    model = DiffusionModel(baseline, seed=1, n_firms=SMALL)
    per_country = np.bincount(model.firms.country, weights=model.firms.weight,
                              minlength=model.countries.n)
    assert np.allclose(per_country, model.countries.gdp)
    assert np.bincount(model.firms.country).min() >= 1, "every country has firms"


@pytest.mark.parametrize("n_firms", [999, 3_000_000])
def test_firm_count_out_of_range_is_rejected(baseline, n_firms):
    with pytest.raises(ValueError, match="firms"):
        run(baseline, seed=1, n_firms=n_firms)


def test_negative_seed_is_rejected(baseline):
    with pytest.raises(ValueError, match="seed"):
        run(baseline, seed=-1, n_firms=SMALL)


def test_provider_catalogue_uses_the_release_data():
    from sim.providers import measured_paths

    m = measured_paths()
    openai = m.quality[:, INDEX["openai"]]
    assert openai[-1] == pytest.approx(153.8), "GPT-5.2 (ECI 153.8, 2025-12) is OpenAI's best"
    assert m.openness[-1, INDEX["qwen"]] == 1.0, "Qwen is permissively licensed"
    assert m.openness[-1, INDEX["llama"]] == 0.6, "Llama's community licence restricts use"
