"""The app, driven through Streamlit's AppTest: worked examples of what a user does.

Most page tests run at 5,000 firms and two runs per ensemble (set through the URL, as a shared
link would) so the file stays well under two minutes; one test loads the page at its defaults.
"""

from __future__ import annotations

import io
import json
import zipfile
from datetime import date

import numpy as np
import polars as pl
import pytest
from streamlit.testing.v1 import AppTest

from sim import app as appmod
from sim import figures as F
from sim import load_scenario, run
from sim.inputs import ROOT
from sim.scenario import Assumptions, Levers, ScenarioError, SecurityShock, parse_scenario

APP = str(ROOT / "app.py")
FAST = {"firms": "5000", "n": "2"}


def page(params: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=90)
    at.query_params.update({**FAST, **(params or {})})
    return at.run()


def metric(at: AppTest, label: str) -> str:
    found = [m.value for m in at.metric if m.label == label]
    assert found, f"no headline number {label!r}; have {[m.label for m in at.metric]}"
    return found[0]


def pct(text: str) -> float:
    return float(text.rstrip("%"))


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]


# --------------------------------------------------------------------------------------------
# The page


def test_the_page_loads_at_its_defaults_with_headline_numbers_and_charts():
    at = AppTest.from_file(APP, default_timeout=120).run()
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    labels = [m.label for m in at.metric]
    assert "Chinese share of AI use" in labels and "US share of AI use" in labels
    assert len(at.get("plotly_chart")) == 2, "the Shares view draws two charts"
    assert at.session_state["run.firms"] == appmod.DEFAULT_FIRMS
    assert at.session_state["run.ensemble"] == appmod.DEFAULT_ENSEMBLE
    # the baseline compared with itself: no change
    assert "+0.0 pp" in [m for m in at.metric if m.label == "US share of AI use"][0].delta


def test_stricter_export_controls_change_the_headline_and_lower_the_chinese_share():
    at = page()
    before = pct(metric(at, "Chinese share of AI use"))
    at.slider(key="levers.export_controls").set_value(1.0).run()
    no_exception(at)
    after = pct(metric(at, "Chinese share of AI use"))
    assert after != before, "moving a lever must change the headline number"
    assert after < before, "tighter export controls should not raise the Chinese share"
    delta = [m for m in at.metric if m.label == "Chinese share of AI use"][0].delta
    assert delta.startswith("-"), f"the change against the baseline should be negative: {delta}"


def test_the_same_seed_gives_the_same_number_and_another_seed_may_not():
    a = page({"seed": "7"})
    b = page({"seed": "7"})
    assert [m.value for m in a.metric] == [m.value for m in b.metric]
    c = page({"seed": "8"})
    assert c.session_state["run.seed"] == 8
    no_exception(c)


def test_every_preset_file_is_offered_and_picking_one_loads_its_settings():
    at = page()
    offered = at.selectbox(key="ui.preset").options
    files = sorted(p.stem for p in (ROOT / "scenarios").glob("*.yaml"))
    assert [o.replace(" ", "_") for o in offered] == files
    target = "export_controls" if "export_controls" in files else files[-1]
    at.selectbox(key="ui.preset").set_value(target).run()
    no_exception(at)
    sc = load_scenario(ROOT / "scenarios" / f"{target}.yaml")
    assert at.session_state["levers.export_controls"] == sc.levers.export_controls
    assert len(at.session_state["_events"]) == len(sc.events)


def test_a_bad_uploaded_scenario_shows_the_error_and_runs_nothing():
    at = page()
    before = [m.value for m in at.metric]
    bad = b"levers:\n  export_controls: 7\n"
    at.file_uploader(key="io.upload").set_value(("bad.yaml", bad, "application/x-yaml")).run()
    no_exception(at)
    errors = " ".join(e.value for e in at.error)
    assert "export_controls" in errors and "less than or equal to 1" in errors, errors
    assert at.session_state["levers.export_controls"] == 0.0, "nothing was loaded"
    assert [m.value for m in at.metric] == before


def test_a_good_uploaded_scenario_is_loaded():
    at = page()
    sc = parse_scenario({"name": "uploaded", "levers": {"export_controls": 0.4}})
    at.file_uploader(key="io.upload").set_value(
        ("mine.yaml", sc.to_yaml().encode(), "application/x-yaml")).run()
    no_exception(at)
    assert at.session_state["levers.export_controls"] == 0.4
    assert any("Loaded mine.yaml" in s.value for s in at.success)


@pytest.mark.parametrize("text, expected", [
    (b"levers: {export_controls: 2}", "levers.export_controls"),
    (b"levers: {export_control: 0.5}", "unknown key"),
    (b"levers: [1, 2", "malformed YAML"),
    (b"\xff\xfe", "not UTF-8"),
    (b"events:\n  - {kind: cutoff, bloc: XX, start: 2030-01-01}\n", "bloc"),
    (b"!!python/object/apply:os.system ['echo hi']", "malformed YAML"),
])
def test_the_upload_handler_rejects_bad_files_with_a_readable_message(text, expected):
    with pytest.raises(ScenarioError) as err:
        appmod.read_uploaded_scenario(text, "upload.yaml")
    assert expected in str(err.value)
    assert "upload.yaml" in str(err.value)


def test_a_link_restores_the_scenario_seed_and_view():
    shock = SecurityShock(bloc="CN", size=2.0, start=date(2027, 1, 1))
    sc = parse_scenario({"name": "shared", "levers": {"export_controls": 0.7,
                                                      "meta_open_weights": False},
                         "assumptions": {"b_trust": 3.0}, "events": [shock.model_dump()]})
    at = page({"s": appmod.encode_scenario(sc), "seed": "3", "view": "Dependency",
               "region": "LMC", "mode": "class", "off": "lock_in"})
    no_exception(at)
    ss = at.session_state
    assert ss["levers.export_controls"] == 0.7
    assert ss["levers.meta_open_weights"] is False
    assert ss["assumptions.b_trust"] == 3.0
    assert [k for _, k in ss["_events"]] == ["security_shock"]
    assert ss["run.seed"] == 3 and ss["ui.view"] == "Dependency" and ss["view.region"] == "LMC"
    assert ss["ui.classroom"] is True and ss["mech.lock_in"] is False
    # the page writes the same settings back into the URL
    restored = appmod.decode_scenario(at.query_params["s"])
    assert restored.model_dump() == sc.model_dump()


def test_a_damaged_link_shows_an_error_and_the_baseline():
    at = page({"s": "not-a-scenario"})
    no_exception(at)
    assert any("link" in e.value for e in at.error)
    assert at.session_state["levers.export_controls"] == 0.0


def test_events_can_be_added_edited_and_removed():
    at = page()
    at.selectbox(key="ui.new_event").set_value("security_shock").run()
    at.button(key="btn.add_event").click().run()
    no_exception(at)
    (eid, kind), = at.session_state["_events"]
    assert kind == "security_shock"
    before = pct(metric(at, "Chinese share of AI use"))
    at.slider(key=f"events.{eid}.size").set_value(4.0).run()
    no_exception(at)
    assert pct(metric(at, "Chinese share of AI use")) < before, \
        "a larger security shock to Chinese models should lower their share"
    at.button(key=f"btn.remove.{eid}").click().run()
    assert at.session_state["_events"] == []


@pytest.mark.parametrize("kind", list(appmod.event_classes()))
def test_every_kind_of_event_can_be_added_with_valid_defaults(kind):
    at = page()
    at.selectbox(key="ui.new_event").set_value(kind).run()
    at.button(key="btn.add_event").click().run()
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    assert [k for _, k in at.session_state["_events"]] == [kind]
    assert at.metric, "the scenario with the new event runs"


def test_every_preset_runs_in_the_app():
    at = page()
    for name in at.selectbox(key="ui.preset").options:
        at.selectbox(key="ui.preset").set_value(name).run()
        no_exception(at)
        assert not at.error, (name, [e.value for e in at.error])
        assert at.metric, name


def test_invalid_settings_show_the_validation_message_and_run_nothing():
    at = page()
    at.selectbox(key="ui.new_event").set_value("cutoff").run()
    at.button(key="btn.add_event").click().run()
    (eid, _), = at.session_state["_events"]
    at.checkbox(key=f"events.{eid}.end.on").check().run()
    at.date_input(key=f"events.{eid}.end").set_value(date(2024, 1, 1)).run()
    no_exception(at)
    assert any("must be after start" in e.value for e in at.error)
    assert not at.metric, "nothing runs while the settings are invalid"


def test_classroom_mode_steps_and_mechanism_switches():
    at = page({"mode": "class"})
    no_exception(at)
    assert any("not forecasts" in i.value for i in at.info)
    with_network = pct(metric(at, "Chinese share of AI use"))
    at.toggle(key="mech.network").set_value(False).run()
    no_exception(at)
    assert pct(metric(at, "Chinese share of AI use")) != with_network, \
        "switching network effects off must change the result"
    at.button(key="btn.next").click().run()
    assert at.session_state["ui.step"] == 1
    at.button(key="btn.apply_step").click().run()
    no_exception(at)
    assert at.session_state["levers.distillation_efficiency"] == 0.6
    assert at.session_state["mech.network"] is True, "each step sets its own switches"


@pytest.mark.parametrize("view", appmod.VIEWS)
def test_every_view_draws(view):
    at = page({"view": view, "preset": "us_cutoff" if view == "Cut-off" else "baseline"})
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    if view != "Policies":
        assert at.get("plotly_chart"), f"the {view} view draws a chart"


def test_a_heavy_request_is_capped_with_a_message(monkeypatch):
    assert appmod.capped_ensemble(500_000, 20) == 2
    assert appmod.capped_ensemble(20_000, 5) == 5
    assert appmod.capped_ensemble(2_000_000, 3) == 1
    monkeypatch.setattr(appmod, "FIRM_RUN_BUDGET", 5_000)
    at = page({"n": "3"})
    assert any("Heavy request" in w.value for w in at.warning)
    assert "1 run(s)" in " ".join(c.value for c in at.caption)


# --------------------------------------------------------------------------------------------
# The pieces behind the page


def test_the_url_codec_round_trips_and_stays_short():
    sc = load_scenario(ROOT / "scenarios" / "baseline.yaml").with_values(
        {"levers.export_controls": 0.35})
    token = appmod.encode_scenario(sc)
    assert len(token) < 2500 and "=" not in token and "+" not in token
    assert appmod.decode_scenario(token).model_dump() == sc.model_dump()
    with pytest.raises(ScenarioError, match="link"):
        appmod.decode_scenario(token[:-10] + "A" * 10)


def test_every_parameter_of_the_schema_has_a_widget_spec():
    keys = set(appmod.PARAM_SPECS)
    assert {f"levers.{k}" for k in Levers.model_fields} <= keys
    assert {f"assumptions.{k}" for k in Assumptions.model_fields} <= keys
    spec = appmod.PARAM_SPECS["levers.export_controls"]
    assert (spec.lo, spec.hi, spec.unit) == (0, 1, "fraction")
    assert "Source:" in spec.help and "Range 0 to 1" in spec.help
    for cls in appmod.event_classes().values():
        for name, finfo in cls.model_fields.items():
            appmod._field_widget(name, finfo.annotation)  # raises if a field has no widget


def test_the_summary_uses_the_same_definitions_as_the_result_frames(baseline):
    result = run(baseline, seed=2, n_firms=3000)
    s = F.summarise(result)
    r = s.r("LMC")
    dep = result.dependency.filter(pl.col("region") == "LMC").sort("date")
    infra, model = F.dependency(s.usage[:, r])
    for b, bloc in enumerate(("US", "CN", "EU")):
        d = dep.filter(pl.col("bloc") == bloc)
        np.testing.assert_allclose(infra[:, b], d["infra_dependency"].to_numpy(), atol=1e-12)
        np.testing.assert_allclose(model[:, b], d["model_dependency"].to_numpy(), atol=1e-12)
    k = result.kpis
    hhi = k.filter(pl.col("metric") == "hhi_providers", pl.col("region") == "WLD")
    np.testing.assert_allclose(F.hhi(s.usage[:, s.r("WLD")]), hhi.sort("date")["value"],
                               atol=1e-12)
    for b, bloc in enumerate(("US", "CN")):
        maj = k.filter(pl.col("metric") == f"majority_countries_{bloc}").sort("date")
        np.testing.assert_array_equal(F.majority_countries(s)[:, b], maj["value"].to_numpy())
    ad = (result.adoption.filter(pl.col("region") == "WLD").group_by("date", "bloc")
          .agg(pl.col("share").sum()).pivot(on="bloc", index="date", values="share")
          .sort("date"))
    cat = F.category_shares(s.usage[:, s.r("WLD")])
    us = [i for i, c in enumerate(F.CATEGORIES) if c[0] == "US"]
    np.testing.assert_allclose(cat[:, us].sum(axis=1), ad["US"].to_numpy(), atol=1e-12)


def test_calibration_posterior_draws_are_paired_and_respect_changed_assumptions(tmp_path):
    path = tmp_path / "parameters.json"
    path.write_text(json.dumps({"method": "ABC", "loss": 1.5, "posterior": [
        {"assumptions.b_trust": 1.0, "b_eco": 0.2}, {"assumptions.b_trust": 3.0, "b_eco": 0.6},
        {"not_a_parameter": 1}]}))
    draws, meta = appmod.load_posterior(path)
    assert len(draws) == 3 and meta == {"method": "ABC", "loss": 1.5}
    sc = parse_scenario({"assumptions": {"b_eco": 1.5}})  # the user changed b_eco
    plan = appmod.ensemble_plan(sc, seed=10, n=3, draws=draws)
    assert [s for _, s in plan] == [10, 11, 12]
    runs = [appmod.parse_yaml(y) for y, _ in plan]
    assert [r.assumptions.b_trust for r in runs] == [1.0, 3.0, sc.assumptions.b_trust]
    assert all(r.assumptions.b_eco == 1.5 for r in runs), "a changed assumption stays as set"
    base = appmod.ensemble_plan(parse_scenario({}), seed=10, n=3, draws=draws)
    default = parse_scenario({}).assumptions.b_trust
    assert [appmod.parse_yaml(y).assumptions.b_trust for y, _ in base] == [1.0, 3.0, default]
    empty, meta = appmod.load_posterior(tmp_path / "missing.json")
    assert empty == [] and meta == {}


def test_the_results_download_holds_every_frame_the_manifest_and_the_scenario():
    sc = parse_scenario({"name": "dl", "levers": {"export_controls": 0.5}})
    plan = appmod.ensemble_plan(sc, seed=1, n=2, draws=[])
    for fmt in ("parquet", "csv"):
        data = appmod.results_archive(plan, 2000, fmt, {"seeds": [1, 2]})
        zf = zipfile.ZipFile(io.BytesIO(data))
        names = set(zf.namelist())
        assert {f"adoption.{fmt}", f"dependency.{fmt}", f"kpis.{fmt}", "manifest.json",
                "scenario.yaml"} <= names
        manifest = json.loads(zf.read("manifest.json"))
        assert [m["seed"] for m in manifest["runs"]] == [1, 2]
        assert {"git_commit", "data_hash", "package_version", "format_version"} <= \
            set(manifest["runs"][0])
        assert appmod.parse_yaml(zf.read("scenario.yaml")).levers.export_controls == 0.5
    adoption = pl.read_parquet(io.BytesIO(zipfile.ZipFile(io.BytesIO(
        appmod.results_archive(plan, 2000, "parquet", {}))).read("adoption.parquet")))
    assert sorted(adoption["seed"].unique().to_list()) == [1, 2]


def test_maps_load_their_base_layer_from_the_apps_static_folder():
    stub = (ROOT / "sim" / "geo" / "topojson" / "world_110m.json").read_bytes()
    assert (ROOT / "static" / "world_110m.json").read_bytes() == stub
    config = (ROOT / ".streamlit" / "config.toml").read_text()
    assert "enableStaticServing = true" in config
    assert appmod.PLOT_CONFIG["topojsonURL"] == "/app/static/"


def test_the_classroom_steps_are_valid_scenarios():
    for step in appmod.STEPS:
        assert step.title and step.explain and step.question and step.notice
        assert set(step.off) <= set(appmod.MECHANISMS)
        assert step.view in appmod.VIEWS
        assert set(step.values) <= set(appmod.PARAM_SPECS)


def test_the_page_draws_calibration_bands_when_the_posterior_exists(tmp_path, monkeypatch):
    from sim import scenario as scenario_mod

    path = tmp_path / "parameters.json"
    path.write_text(json.dumps({"method": "ABC-SMC", "date": "2026-01-01", "loss": 2.0,
                                "parameters": {"b_trust": 2.0},
                                "posterior": [{"b_trust": 1.0}, {"b_trust": 3.0}]}))
    monkeypatch.setattr(scenario_mod, "CALIBRATION_FILE", path)
    at = page({"view": "Calibration"})
    no_exception(at)
    assert at.checkbox(key="run.posterior").value is True
    assert "2 posterior draws" in " ".join(c.value for c in at.caption)
    with_post = [m.value for m in at.metric]
    at.checkbox(key="run.posterior").uncheck().run()
    assert "seeds only" in " ".join(c.value for c in at.caption)
    assert [m.value for m in at.metric] != with_post, "posterior draws change the ensemble"
