"""The Streamlit app: scenarios for analysts, a classroom mode for teachers.

``app.py`` only sets the page up and calls :func:`main`. Everything the page does lives here
(state, widgets generated from the scenario schema, the cached run function, sharing and
export, the classroom steps); every figure comes from :mod:`sim.figures`.

How a page run goes:

1. The session state is restored (first visit: from the URL's ``s`` parameter, else the
   baseline preset) and kept alive across views (widget keys equal parameter names, e.g.
   ``levers.export_controls``).
2. The sidebar builds a :class:`~sim.scenario.Scenario` from the widgets; invalid settings show
   the validation message and nothing runs.
3. The scenario and the baseline run as paired ensembles (same seeds, same posterior draws):
   one member first, drawn at once, then the others, after which the charts are redrawn with
   bands. Each member is one call of the cached :func:`run_summary`, keyed on the scenario
   YAML, the seed and the number of firms.
4. The URL is updated so that the page can be shared as a link.
"""

from __future__ import annotations

import base64
import io
import json
import math
import time
import typing
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import lru_cache
from importlib import util as importlib_util
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
import polars as pl
import streamlit as st
from pydantic import BaseModel

from sim import figures as F
from sim import scenario as scenario_mod
from sim.countries import default_countries, known_groups
from sim.inputs import INCOME_GROUPS, ROOT
from sim.model import run
from sim.providers import PROVIDER_IDS
from sim.scenario import (
    SECTORS,
    Assumptions,
    Levers,
    Scenario,
    ScenarioError,
    Target,
    load_scenario,
    parse_scenario,
    parse_yaml,
)

SCENARIO_DIR = ROOT / "scenarios"
DEFAULT_FIRMS = 20_000
FIRM_CHOICES = (5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000)
MAX_ENSEMBLE = 20
DEFAULT_ENSEMBLE = 5
# Interactive budget: firms x ensemble members per view (scenario and baseline each). A run at
# 20,000 firms takes ~0.25 s; 1,000,000 firm-runs is a few seconds. Larger jobs: `diffusim sweep`.
FIRM_RUN_BUDGET = 1_000_000
VIEWS = ("Shares", "Map", "Dependency", "Why", "Cut-off", "Calibration", "Policies")
REGION_NAMES = {"WLD": "World", "HIC": "High income", "UMC": "Upper-middle income",
                "LMC": "Lower-middle income", "LIC": "Low income"}
MECHANISMS = {  # toggle key -> (label, what it does, parameter values when switched off)
    "network": ("Network effects", "ecosystem (Hugging Face derivatives) and peers",
                {"assumptions.b_eco": 0.0, "assumptions.b_peer": 0.0}),
    "lock_in": ("Lock-in", "switching costs that grow with tenure",
                {"assumptions.switch_cost": 0.0}),
    "trust": ("Trust", "alignment, data sovereignty, security and shocks",
              {"assumptions.b_trust": 0.0}),
}
EVENT_LABELS = {"ban": "Ban", "security_shock": "Security shock", "cutoff": "API cut-off",
                "data_localisation": "Data-localisation law",
                "sovereign_ai": "Sovereign-AI programme",
                "trigger": "Trigger (dependency threshold)"}
CONDITIONAL_NOTE = ("Results are conditional on the assumptions and levers shown, not forecasts. "
                    "Bands show the spread across random seeds (and calibrated parameter draws "
                    "when available), not every source of uncertainty.")
# Session-state keys kept alive when their widget is not drawn (see _persist_widget_state).
PERSISTENT_PREFIXES = ("levers.", "assumptions.", "events.", "run.", "ui.", "mech.", "view.",
                       "stress.")


# --------------------------------------------------------------------------------------------
# Parameters declared once (sim.scenario) -> widgets


@dataclass(frozen=True)
class ParamSpec:
    """A scenario parameter as the app shows it, read from the pydantic field."""

    key: str  # "levers.export_controls"
    name: str
    kind: str  # "float" | "int" | "bool" | "date"
    lo: float | None
    hi: float | None
    step: float | None
    default: Any
    unit: str
    source: str
    description: str

    @property
    def label(self) -> str:
        """Widget label: the parameter name in words, with its unit."""
        words = [WORDS.get(w, w) for w in self.name.split("_")]
        if self.name.startswith("b_"):
            words = ["weight of", *words[1:]]
        text = " ".join(words)
        text = text[0].upper() + text[1:]
        unit = f" ({self.unit})" if self.unit and self.kind not in ("bool", "date") else ""
        return text + unit

    @property
    def help(self) -> str:
        """Widget help: meaning, range, unit, default and source."""
        rng = f" Range {_fmt(self.lo)} to {_fmt(self.hi)}." if self.lo is not None else ""
        unit = f" Unit: {self.unit}." if self.unit else ""
        return (f"{self.description}.{rng}{unit} Default {_fmt(self.default)}. "
                f"Source: {self.source}. Key: `{self.key}`")


WORDS = {"cn": "Chinese", "us": "US", "api": "API", "eco": "ecosystem", "lic": "licence",
         "perf": "performance", "peer": "peers", "rho": "reconsider rate ρ", "none": "no-AI",
         "w": "trust lost:", "deriv": "derivatives", "selfhost": "self-hosting",
         "prob": "probability"}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _nice_step(span: float) -> float:
    raw = span / 100
    k = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * k >= raw - 1e-12:
            return float(round(m * k, 12))
    return float(10 * k)  # pragma: no cover


def _bounds(finfo) -> tuple[float | None, float | None, bool, bool]:
    lo = hi = None
    lo_open = hi_open = False
    for m in finfo.metadata:
        if getattr(m, "ge", None) is not None:
            lo = m.ge
        if getattr(m, "gt", None) is not None:
            lo, lo_open = m.gt, True
        if getattr(m, "le", None) is not None:
            hi = m.le
        if getattr(m, "lt", None) is not None:
            hi, hi_open = m.lt, True
    return lo, hi, lo_open, hi_open


def param_specs(model: type[BaseModel], section: str) -> list[ParamSpec]:
    """One :class:`ParamSpec` per field of ``Levers`` or ``Assumptions``, in declaration order."""
    specs = []
    for name, finfo in model.model_fields.items():
        ann = finfo.annotation
        kind = {bool: "bool", int: "int", float: "float", date: "date"}.get(ann)
        if kind is None:
            raise TypeError(f"{section}.{name}: the app has no widget for type {ann!r}")
        extra = finfo.json_schema_extra if isinstance(finfo.json_schema_extra, dict) else {}
        lo, hi, lo_open, hi_open = _bounds(finfo)
        step = None
        if kind in ("float", "int") and lo is not None and hi is not None:
            step = 1.0 if kind == "int" else _nice_step(hi - lo)
            lo = lo + step if lo_open else lo
            hi = hi - step if hi_open else hi
        specs.append(ParamSpec(f"{section}.{name}", name, kind, lo, hi, step, finfo.default,
                               str(extra.get("unit", "")), str(extra.get("source", "")),
                               (finfo.description or name).rstrip(".")))
    return specs


LEVER_SPECS = param_specs(Levers, "levers")
ASSUMPTION_SPECS = param_specs(Assumptions, "assumptions")
PARAM_SPECS = {s.key: s for s in (*LEVER_SPECS, *ASSUMPTION_SPECS)}


def event_classes() -> dict[str, type[BaseModel]]:
    """Event classes by ``kind`` tag, read from the scenario schema (new kinds appear here)."""
    classes = getattr(scenario_mod, "EVENT_KINDS", None)
    if classes is None:
        union = typing.get_args(scenario_mod.Event)[0]
        classes = typing.get_args(union)
    return {c.model_fields["kind"].default: c for c in classes}


def _field_widget(name: str, ann: Any) -> tuple[str, tuple]:
    """Widget kind for an event field annotation, and its options."""
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if ann is date:
        return "date", ()
    if ann in (int, float, bool, str):
        return ann.__name__, ()
    if isinstance(ann, type) and issubclass(ann, Target):
        return "target", ()
    if origin is typing.Literal:
        return "choice", args
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            kind, opts = _field_widget(name, inner[0])
            return "opt_" + kind, opts
    if origin is list:
        return ("providers", tuple(PROVIDER_IDS)) if name == "providers" else ("tags", ())
    raise TypeError(f"event field {name}: the app has no widget for type {ann!r}")


# --------------------------------------------------------------------------------------------
# Presets, URL, upload


@lru_cache(maxsize=32)
def _preset_cached(path: str, mtime: float) -> Scenario | ScenarioError:
    try:
        return load_scenario(path)
    except ScenarioError as exc:
        return exc


def presets() -> dict[str, Scenario | ScenarioError]:
    """Every ``scenarios/*.yaml``: its validated scenario, or the error that stops it."""
    out = {}
    for p in sorted(Path(SCENARIO_DIR).glob("*.yaml")):
        out[p.stem] = _preset_cached(str(p), p.stat().st_mtime)
    return out


def baseline_scenario() -> Scenario:
    """The baseline preset (``scenarios/baseline.yaml``), or the defaults if it is missing."""
    sc = presets().get("baseline")
    return sc if isinstance(sc, Scenario) else parse_scenario({"name": "baseline"})


def encode_scenario(scenario: Scenario) -> str:
    """The scenario as URL-safe text: base64url of zlib-compressed YAML."""
    raw = zlib.compress(scenario.to_yaml().encode(), 9)
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_scenario(token: str) -> Scenario:
    """Inverse of :func:`encode_scenario`; a bad link raises :class:`ScenarioError`."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        text = zlib.decompressobj().decompress(raw, scenario_mod.MAX_SCENARIO_BYTES + 1)
    except (ValueError, zlib.error) as exc:
        raise ScenarioError(f"link: the scenario in the URL is damaged ({exc})") from None
    return parse_yaml(text, "link")


def read_uploaded_scenario(data: bytes, name: str = "upload") -> Scenario:
    """Validate an uploaded scenario file (YAML is parsed safely; nothing is executed or run).

    Raises:
        ScenarioError: with the message to show (field, value and allowed range).
    """
    if len(data) > scenario_mod.MAX_SCENARIO_BYTES:
        raise ScenarioError(f"{name}: file is {len(data)} bytes; a scenario may be at most "
                            f"{scenario_mod.MAX_SCENARIO_BYTES} bytes")
    return parse_yaml(data, name)


# --------------------------------------------------------------------------------------------
# Calibration posterior and ensembles


def load_posterior(path: Path | None = None) -> tuple[list[dict], dict]:
    """Posterior draws (list of ``{"assumptions.x": v}`` dicts) and the file's metadata.

    ``calibration/parameters.json`` is written by the calibration; when it is missing or has no
    ``posterior`` the list is empty and bands come from seeds only.
    """
    path = path or scenario_mod.CALIBRATION_FILE
    if not path.is_file():
        return [], {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return [], {"error": f"{path.name} is not readable JSON"}
    post = data.get("posterior") or []
    if isinstance(post, dict):  # {param: [values...]} -> list of dicts
        names = list(post)
        n = min((len(v) for v in post.values()), default=0)
        post = [{k: post[k][i] for k in names} for i in range(n)]
    draws = [d for d in post if isinstance(d, dict)]
    meta = {k: v for k, v in data.items() if k not in ("posterior", "parameters")}
    return draws, meta


@lru_cache(maxsize=4)
def _reference(mtime: float) -> Scenario:
    return parse_scenario({})


def reference_scenario() -> Scenario:
    """The defaults (with calibrated assumptions when ``calibration/parameters.json`` exists)."""
    path = scenario_mod.CALIBRATION_FILE
    return _reference(path.stat().st_mtime if path.is_file() else 0.0)


def apply_draw(sc: Scenario, draw: dict, reference: Scenario | None = None) -> Scenario:
    """The scenario with a posterior draw's assumption values.

    Only assumptions the user left at their calibrated default take the draw's value, so a
    deliberately changed assumption stays as set. Unknown keys are ignored.
    """
    ref = (reference or reference_scenario()).assumptions
    values = {}
    for key, v in draw.items():
        name = key.rpartition(".")[2]
        if name in Assumptions.model_fields and \
                getattr(sc.assumptions, name) == getattr(ref, name):
            values[f"assumptions.{name}"] = v
    return sc.with_values(values) if values else sc


def ensemble_plan(sc: Scenario, seed: int, n: int, draws: list[dict]) -> list[tuple[str, int]]:
    """Ensemble members as (scenario YAML, seed), with seeds ``seed, seed+1, ...``.

    Posterior draws, when given, are spread evenly over the list (the calibration writes them
    resampled, so neighbours are often copies of one particle).

    The baseline gets the same plan, so member *i* of both shares seed and draw (paired).
    """
    if not draws:
        text = scenario_yaml(sc)
        return [(text, seed + j) for j in range(n)]
    ref = reference_scenario()
    plan = []
    for j in range(n):
        k = (j * len(draws)) // n if n <= len(draws) else j % len(draws)
        s = apply_draw(sc, draws[k], ref)
        plan.append((scenario_yaml(s), seed + j))
    return plan


def capped_ensemble(n_firms: int, n: int) -> int:
    """Members allowed within :data:`FIRM_RUN_BUDGET` (at least one)."""
    return max(1, min(n, FIRM_RUN_BUDGET // n_firms))


_COMPUTED: set[tuple[int, int, int]] = set()  # what this process has run (cache bookkeeping)
_PARSED: dict[str, Scenario] = {}  # YAML written by scenario_yaml -> its scenario (skip parsing)


def scenario_yaml(sc: Scenario) -> str:
    """A scenario's YAML, remembered so the run function need not parse it again."""
    text = sc.to_yaml()
    if len(_PARSED) > 256:
        _PARSED.clear()
    _PARSED[text] = sc
    return text


@st.cache_data(show_spinner=False, max_entries=96)
def run_summary(scenario_yaml: str, seed: int, n_firms: int) -> F.Summary:
    """The one cached run: a scenario (as YAML), a seed and a firm count -> a run summary."""
    sc = _PARSED.get(scenario_yaml) or parse_yaml(scenario_yaml)
    summary = F.summarise(run(sc, seed=seed, n_firms=n_firms))
    _COMPUTED.add((hash(scenario_yaml), seed, n_firms))
    return summary


def is_computed(scenario_yaml: str, seed: int, n_firms: int) -> bool:
    """Whether this process already ran that member (so it comes from the cache)."""
    return (hash(scenario_yaml), seed, n_firms) in _COMPUTED


# --------------------------------------------------------------------------------------------
# Optional analysis modules written alongside the app


def has_module(name: str) -> bool:
    """Whether ``sim.<name>`` can be imported (the driver and stress modules)."""
    try:
        return importlib_util.find_spec(f"sim.{name}") is not None
    except (ImportError, ValueError):
        return False


@st.cache_data(show_spinner=False, max_entries=64)
def cached_drivers(scenario_yaml: str, seed: int, n_firms: int, country: str,
                   when: date) -> pl.DataFrame:
    """``sim.drivers.decompose`` for one country and month (cached)."""
    from sim import drivers

    return drivers.decompose(parse_yaml(scenario_yaml), seed, n_firms, country, when)


@st.cache_data(show_spinner=False, max_entries=64)
def cached_stress(scenario_yaml: str, seed: int, n_firms: int, bloc: str,
                  groups: tuple[str, ...], at: date, months: int | None) -> dict:
    """``sim.stress.cutoff_test`` (cached): its per-region summary and the stressed run."""
    from sim import stress

    res = stress.cutoff_test(parse_yaml(scenario_yaml), seed, n_firms, bloc, list(groups), at,
                             months=months)
    return {"summary": res.summary, "run": F.summarise(res.result)}


@st.cache_data(show_spinner=False, max_entries=64)
def cached_targets(scenario_yaml: str, seed: int, n_firms: int) -> dict:
    """Calibration targets (``sim.targets``) of one run: statistics and monthly series."""
    from sim import targets as T

    result = run(parse_yaml(scenario_yaml), seed=seed, n_firms=n_firms)
    out = T.Outputs(result)
    stats, monthly = [], {}
    for t in T.build_targets():
        try:
            stats.append(t.statistic(out))
            monthly[t.id] = t.monthly(out)
        except (ValueError, KeyError):
            stats.append(float("nan"))
    return {"stats": stats, "monthly": monthly}


# --------------------------------------------------------------------------------------------
# Export


def results_archive(plan: list[tuple[str, int]], n_firms: int, fmt: str, info: dict) -> bytes:
    """A zip of every member's frames (``fmt`` "parquet" or "csv"), the manifest and scenario.

    Frames carry ``member`` and ``seed`` columns; ``manifest.json`` holds the app's settings and
    each member's :attr:`Result.manifest` (versions, commit, data hash, parameters).
    """
    from sim.result import FRAMES

    buf = io.BytesIO()
    frames: dict[str, list[pl.DataFrame]] = {name: [] for name in FRAMES}
    manifests = []
    for j, (yaml_text, seed) in enumerate(plan):
        result = run(parse_yaml(yaml_text), seed=seed, n_firms=n_firms)
        manifests.append(result.manifest)
        for name in FRAMES:
            frames[name].append(getattr(result, name).with_columns(
                member=pl.lit(j, pl.Int32), seed=pl.lit(seed, pl.Int64)))
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, parts in frames.items():
            df = pl.concat(parts)
            out = io.BytesIO()
            if fmt == "csv":
                df.write_csv(out)
            else:
                df.write_parquet(out)
            zf.writestr(f"{name}.{fmt}", out.getvalue())
        zf.writestr("manifest.json", json.dumps({"app": info, "runs": manifests}, indent=2,
                                                default=str))
        zf.writestr("scenario.yaml", plan[0][0] if plan else "")
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# Classroom


@dataclass(frozen=True)
class Step:
    """One step of the guided lesson."""

    title: str
    explain: str
    change_label: str
    question: str
    notice: str
    values: dict = field(default_factory=dict)  # parameter key -> value (from the baseline)
    events: tuple = ()  # event dicts added to the baseline
    off: tuple = ()  # mechanisms switched off
    view: str = "Shares"
    region: str = "WLD"


STEPS = (
    Step("1. Where we start",
         "Every country has a synthetic population of firms. Each month some of them reconsider "
         "which AI they use: a US, Chinese or European model, through an API (the provider runs "
         "it) or as open weights (the firm or a local host runs it). The chart stacks the share "
         "of economic activity on each option.",
         "Reset to the baseline: the world as recorded to 2025, then current trends.",
         "In 2035, which bloc serves most AI use? How much of it comes through APIs, which can "
         "be switched off, and how much through open weights?",
         "Both blocs end large. Chinese use is mostly open weights; US use is mostly APIs."),
    Step("2. Cheap open weights",
         "Distillation puts big-model capability into small models that are cheap to run. Open "
         "weights then cost little more than the hardware, and cost counts relative to income.",
         "Open weights get cheaper faster (distillation efficiency 0.3 to 0.6 a year); "
         "look at lower-middle-income countries.",
         "Where does the shift to open weights happen first: in rich or in poorer countries? "
         "Why?",
         "The cost term is ln(cost / income): the same saving weighs more where incomes are low.",
         values={"levers.distillation_efficiency": 0.6}, region="LMC"),
    Step("3. Network effects",
         "Firms like what their peers use, and open families with many Hugging Face "
         "derivatives get more tooling and more builders: success feeds success.",
         "Switch off network effects (ecosystem and peer weights set to 0).",
         "Without network effects, does the leader win by as much? What does that say about "
         "'winner takes most'?",
         "Shares move toward what cost, quality and trust alone justify; concentration (HHI, "
         "Dependency view) and the number of countries with a majority change.",
         off=("network",)),
    Step("4. Lock-in",
         "Switching costs grow with the time a firm has used a provider. Early choices stick.",
         "Strict US export controls slow the Chinese catch-up. Then switch lock-in off and "
         "compare.",
         "After export controls, how fast do users leave Chinese models? What changes when "
         "switching is free?",
         "With lock-in the early lead persists for years; without it shares follow quality "
         "quickly.",
         values={"levers.export_controls": 1.0}),
    Step("5. A trust shock",
         "A security incident (like the jailbreak results reported for DeepSeek) lowers trust "
         "in one bloc's models; the shock fades with a half-life.",
         "A large security shock to Chinese models in 2027 (size 2, half-life 12 months).",
         "Do users come back once trust has recovered? Compare with lock-in on and off.",
         "Users who switched stay away long after the shock has faded: lock-in turns a "
         "temporary shock into a lasting shift.",
         events=({"kind": "security_shock", "bloc": "CN", "size": 2.0,
                  "half_life_months": 12.0, "start": date(2027, 1, 1)},)),
    Step("6. A cut-off",
         "Dependency comes in two kinds: on a bloc's APIs (infrastructure, can be switched off "
         "overnight) and on its open weights (model, keeps running but gets no updates).",
         "The US stops serving its APIs to lower-middle and low-income countries in 2029.",
         "How much use is disrupted, and how fast is it served again? Would open weights have "
         "been cut off too?",
         "Only infrastructure dependency is disrupted; firms move to open weights or other "
         "APIs within months. See the Cut-off and Dependency views.",
         events=({"kind": "cutoff", "bloc": "US", "start": date(2029, 1, 1),
                  "target": {"groups": ["LMC", "LIC"]}},), view="Cut-off", region="LMC"),
    Step("7. What a model can and cannot tell us",
         "Everything here follows from assumptions: how firms weigh cost, quality and trust; "
         "how fast ecosystems grow. Bands show randomness and calibrated parameter ranges, not "
         "what the model leaves out.",
         "Switch off trust (its weight set to 0) to see how much the conclusions rest on it.",
         "Which assumption would change your conclusion most? What data would you collect to "
         "check it?",
         "Results are conditional scenarios, not forecasts; the Calibration view shows how few "
         "data points pin the model down.",
         off=("trust",), view="Calibration"),
)


# --------------------------------------------------------------------------------------------
# Session state


def _ss() -> Any:
    return st.session_state


def _persist_widget_state() -> None:
    """Re-assign managed keys so values survive when their widget is not drawn this run."""
    ss = _ss()
    for k in list(ss.keys()):
        if isinstance(k, str) and k.startswith(PERSISTENT_PREFIXES):
            ss[k] = ss[k]


def _clear_events() -> None:
    ss = _ss()
    for k in [k for k in list(ss.keys()) if isinstance(k, str) and k.startswith("events.")]:
        del ss[k]
    ss["_events"] = []


def _event_to_state(ev: BaseModel) -> None:
    ss = _ss()
    eid = ss.get("_next_event", 0)
    ss["_next_event"] = eid + 1
    kind = ev.kind
    ss["_events"] = [*ss.get("_events", []), (eid, kind)]
    cls = event_classes()[kind]
    for name, finfo in cls.model_fields.items():
        if name == "kind":
            continue
        wkind, opts = _field_widget(name, finfo.annotation)
        value = getattr(ev, name)
        key = f"events.{eid}.{name}"
        if wkind == "target":
            for part in ("countries", "groups", "sectors"):
                ss[f"{key}.{part}"] = list(getattr(value, part))
        elif wkind.startswith("opt_"):
            ss[f"{key}.on"] = value is not None
            ss[key] = value if value is not None else _opt_default(wkind, opts, ev)
        elif wkind == "float":
            ss[key] = float(value)
        else:
            ss[key] = value


def _opt_default(wkind: str, opts: tuple, ev: BaseModel) -> Any:
    if wkind == "opt_date":
        s = ev.start
        return date(s.year + 2, s.month, 1)
    if wkind == "opt_choice":
        return opts[0]
    return None  # pragma: no cover


def _event_from_state(eid: int, kind: str) -> dict:
    ss = _ss()
    cls = event_classes()[kind]
    data: dict[str, Any] = {"kind": kind}
    for name, finfo in cls.model_fields.items():
        if name == "kind":
            continue
        wkind, _ = _field_widget(name, finfo.annotation)
        key = f"events.{eid}.{name}"
        if wkind == "target":
            data[name] = {p: list(ss.get(f"{key}.{p}", [])) for p in
                          ("countries", "groups", "sectors")}
        elif wkind.startswith("opt_"):
            data[name] = ss.get(key) if ss.get(f"{key}.on") else None
        elif key in ss:
            data[name] = ss[key]
    return data


def apply_scenario(sc: Scenario, preset: str | None = None) -> None:
    """Load a scenario into the widgets' state (levers, assumptions, events)."""
    ss = _ss()
    for section, specs in (("levers", LEVER_SPECS), ("assumptions", ASSUMPTION_SPECS)):
        obj = getattr(sc, section)
        for spec in specs:
            v = getattr(obj, spec.name)
            ss[spec.key] = float(v) if spec.kind == "float" else v
    _clear_events()
    for ev in sc.events:
        _event_to_state(ev)
    ss["_meta"] = {"name": sc.name, "description": sc.description, "start": sc.start,
                   "end": sc.end}
    if preset is not None:
        ss["ui.preset"] = preset
    ss["_preset_dump"] = _comparable(sc)


def _comparable(sc: Scenario) -> dict:
    d = sc.model_dump(mode="json")
    d.pop("name", None)
    d.pop("description", None)
    return d


def scenario_from_state() -> Scenario:
    """The scenario the widgets describe (raises :class:`ScenarioError`)."""
    ss = _ss()
    meta = ss.get("_meta", {})
    data = {
        "name": meta.get("name", "custom"), "description": meta.get("description", ""),
        "start": meta.get("start", date(2023, 1, 1)), "end": meta.get("end", date(2035, 12, 1)),
        "levers": {s.name: ss[s.key] for s in LEVER_SPECS if s.key in ss},
        "assumptions": {s.name: ss[s.key] for s in ASSUMPTION_SPECS if s.key in ss},
        "events": [_event_from_state(eid, kind) for eid, kind in ss.get("_events", [])],
    }
    return parse_scenario(data, "settings")


def mechanism_overrides() -> dict[str, float]:
    """Parameter values of the mechanisms switched off (classroom mode only)."""
    ss = _ss()
    if not ss.get("ui.classroom"):
        return {}
    out: dict[str, float] = {}
    for key, (_, _, values) in MECHANISMS.items():
        if not ss.get(f"mech.{key}", True):
            out.update(values)
    return out


def _default_state() -> None:
    ss = _ss()
    ss["run.seed"] = 1
    ss["run.ensemble"] = DEFAULT_ENSEMBLE
    ss["run.firms"] = DEFAULT_FIRMS
    ss["run.posterior"] = True
    ss["run.same_assumptions"] = False
    ss["ui.classroom"] = False
    ss["ui.step"] = 0
    ss["ui.view"] = VIEWS[0]
    ss["view.region"] = "WLD"
    ss["view.date"] = None
    ss["view.country"] = "IND"
    ss["view.measure"] = "total_CN"
    ss["view.diff"] = False
    ss["stress.bloc"] = "US"
    ss["stress.groups"] = ["LMC", "LIC"]
    ss["stress.at"] = "2029-01"
    ss["stress.months"] = "for good"
    for key in MECHANISMS:
        ss[f"mech.{key}"] = True


def _int_param(params: dict, name: str, lo: int, hi: int) -> int | None:
    try:
        v = int(params[name])
    except (KeyError, ValueError, TypeError):
        return None
    return v if lo <= v <= hi else None


def init_state(params: dict) -> None:
    """First run of a session: defaults, then everything the link carries."""
    ss = _ss()
    _default_state()
    ss["_messages"] = []
    preset = params.get("preset")
    all_presets = presets()
    if preset not in all_presets or not isinstance(all_presets[preset], Scenario):
        preset = "baseline" if "baseline" in all_presets else next(iter(all_presets), None)
    token = params.get("s")
    if token:
        try:
            apply_scenario(decode_scenario(token))
            ss["ui.preset"] = preset
            ss["_preset_dump"] = _comparable(all_presets[preset]) if preset else {}
        except ScenarioError as exc:
            ss["_messages"].append(("error", f"The link's scenario could not be loaded, so the "
                                    f"baseline is shown instead.\n\n{exc}"))
            token = None
    if not token:
        sc = all_presets.get(preset) if preset else None
        apply_scenario(sc if isinstance(sc, Scenario) else baseline_scenario(), preset)
    if (v := _int_param(params, "seed", 0, 2**31 - 1)) is not None:
        ss["run.seed"] = v
    if (v := _int_param(params, "n", 1, MAX_ENSEMBLE)) is not None:
        ss["run.ensemble"] = v
    if (v := _int_param(params, "firms", 1_000, 2_000_000)) in FIRM_CHOICES:
        ss["run.firms"] = v
    ss["ui.classroom"] = params.get("mode") == "class"
    if (v := _int_param(params, "step", 1, len(STEPS))) is not None:
        ss["ui.step"] = v - 1
    off = [m for m in str(params.get("off", "")).split(",") if m in MECHANISMS]
    for key in MECHANISMS:
        ss[f"mech.{key}"] = key not in off
    if params.get("view") in VIEWS:
        ss["ui.view"] = params["view"]
    if params.get("region") in region_options():
        ss["view.region"] = params["region"]
    if params.get("date"):
        ss["view.date"] = str(params["date"])
    ss["run.posterior"] = params.get("post", "1") != "0"
    ss["run.same_assumptions"] = params.get("same") == "1"
    ss["_ready"] = True


def share_params(sc: Scenario) -> dict[str, str]:
    """Query parameters that restore the page: the scenario plus run and view settings."""
    ss = _ss()
    p = {"s": encode_scenario(sc), "preset": str(ss.get("ui.preset") or ""),
         "seed": str(ss["run.seed"]), "n": str(ss["run.ensemble"]),
         "firms": str(ss["run.firms"]), "view": str(ss.get("ui.view") or VIEWS[0]),
         "region": str(ss.get("view.region") or "WLD")}
    if ss.get("view.date"):
        p["date"] = str(ss["view.date"])
    if ss.get("ui.classroom"):
        p["mode"] = "class"
        p["step"] = str(int(ss.get("ui.step", 0)) + 1)
        off = [k for k in MECHANISMS if not ss.get(f"mech.{k}", True)]
        if off:
            p["off"] = ",".join(off)
    if not ss.get("run.posterior", True):
        p["post"] = "0"
    if ss.get("run.same_assumptions"):
        p["same"] = "1"
    return p


# --------------------------------------------------------------------------------------------
# Callbacks


def _on_preset() -> None:
    ss = _ss()
    name = ss.get("ui.preset")
    sc = presets().get(name)
    if isinstance(sc, Scenario):
        apply_scenario(sc, name)


def _on_reset_preset() -> None:
    _on_preset()


def _on_reset_assumptions() -> None:
    ref = reference_scenario()
    ss = _ss()
    for spec in ASSUMPTION_SPECS:
        v = getattr(ref.assumptions, spec.name)
        ss[spec.key] = float(v) if spec.kind == "float" else v


def _on_add_event() -> None:
    ss = _ss()
    kind = ss.get("ui.new_event", "security_shock")
    cls = event_classes()[kind]
    data: dict[str, Any] = {"kind": kind, "start": date(2027, 1, 1)}
    if "bloc" in cls.model_fields and (cls.model_fields["bloc"].is_required() or kind == "ban"):
        data["bloc"] = "US" if kind == "cutoff" else "CN"
    _event_to_state(cls.model_validate(data))


def _on_remove_event(eid: int) -> None:
    ss = _ss()
    ss["_events"] = [(i, k) for i, k in ss.get("_events", []) if i != eid]
    for k in [k for k in list(ss.keys()) if isinstance(k, str)
              and k.startswith(f"events.{eid}.")]:
        del ss[k]


def _on_upload() -> None:
    ss = _ss()
    up = ss.get("io.upload")
    if up is None:
        return
    try:
        sc = read_uploaded_scenario(up.getvalue(), up.name)
    except ScenarioError as exc:
        ss["_upload"] = ("error", str(exc))
        return
    apply_scenario(sc)
    ss["_upload"] = ("ok", f"Loaded {up.name} ({sc.name}).")


def _on_step_nav(delta: int) -> None:
    ss = _ss()
    ss["ui.step"] = min(max(int(ss.get("ui.step", 0)) + delta, 0), len(STEPS) - 1)


def _on_apply_step() -> None:
    ss = _ss()
    step = STEPS[int(ss.get("ui.step", 0))]
    base = baseline_scenario()
    data = base.model_dump(mode="json")
    data["events"] = data["events"] + [
        {k: (v.isoformat() if isinstance(v, date) else v) for k, v in ev.items()}
        for ev in step.events]
    sc = parse_scenario(data, "classroom step").with_values(step.values) if step.values else \
        parse_scenario(data, "classroom step")
    apply_scenario(sc, "baseline" if "baseline" in presets() else None)
    for key in MECHANISMS:
        ss[f"mech.{key}"] = key not in step.off
    ss["ui.view"] = step.view
    ss["view.region"] = step.region
    for ev in step.events:  # the Cut-off view tests the step's own cut-off
        if ev["kind"] == "cutoff":
            ss["stress.bloc"] = ev["bloc"]
            ss["stress.groups"] = list(ev.get("target", {}).get("groups", []))
            ss["stress.at"] = ev["start"].strftime("%Y-%m")


# --------------------------------------------------------------------------------------------
# Widgets


@lru_cache(maxsize=1)
def region_options() -> tuple[str, ...]:
    """World, income groups, then countries by name."""
    tab = default_countries()
    countries = sorted(tab.iso3, key=lambda c: tab.name[tab.iso3.index(c)])
    return ("WLD", *INCOME_GROUPS, *countries)


@lru_cache(maxsize=1)
def country_names() -> dict[str, str]:
    """ISO3 -> name of every modelled country."""
    tab = default_countries()
    return dict(zip(tab.iso3, tab.name))


def region_name(code: str) -> str:
    """Readable name of a region code."""
    return REGION_NAMES.get(code) or country_names().get(code, code)


def _param_widget(spec: ParamSpec, slider: bool) -> None:
    ss = _ss()
    if spec.key not in ss:
        ss[spec.key] = float(spec.default) if spec.kind == "float" else spec.default
    if spec.kind == "bool":
        st.toggle(spec.label, key=spec.key, help=spec.help)
    elif spec.kind == "date":
        st.date_input(spec.label, key=spec.key, help=spec.help, min_value=date(2023, 1, 1),
                      max_value=date(2060, 12, 1))
    elif spec.kind == "int":
        ss[spec.key] = int(ss[spec.key])
        st.number_input(spec.label, min_value=int(spec.lo), max_value=int(spec.hi), step=1,
                        key=spec.key, help=spec.help)
    elif slider:
        ss[spec.key] = float(ss[spec.key])
        st.slider(spec.label, min_value=float(spec.lo), max_value=float(spec.hi),
                  step=float(spec.step), key=spec.key, help=spec.help)
    else:
        ss[spec.key] = float(ss[spec.key])
        decimals = max(0, -math.floor(math.log10(spec.step))) + 1
        st.number_input(spec.label, min_value=float(spec.lo), max_value=float(spec.hi),
                        step=float(spec.step), format=f"%.{decimals}f", key=spec.key,
                        help=spec.help)


def _target_widgets(key: str) -> None:
    names = country_names()
    st.multiselect("Target countries (empty: all)", sorted(names, key=names.get),
                   format_func=lambda c: f"{names[c]} ({c})", key=f"{key}.countries")
    st.multiselect("Target groups", sorted(known_groups()), key=f"{key}.groups",
                   help=Target.model_fields["groups"].description)
    st.multiselect("Target sectors (empty: all)", list(SECTORS), key=f"{key}.sectors")


def _event_widgets(eid: int, kind: str) -> None:
    ss = _ss()
    cls = event_classes()[kind]
    for name, finfo in cls.model_fields.items():
        if name == "kind":
            continue
        wkind, opts = _field_widget(name, finfo.annotation)
        key = f"events.{eid}.{name}"
        label = name.replace("_", " ").capitalize()
        help_ = finfo.description
        lo, hi, lo_open, hi_open = _bounds(finfo)
        if wkind == "target":
            _target_widgets(key)
        elif wkind == "date":
            st.date_input(label, key=key, help=help_, min_value=date(2023, 1, 1),
                          max_value=date(2060, 12, 1))
        elif wkind == "opt_date":
            st.checkbox(f"{label}: set", key=f"{key}.on", help=help_)
            if ss.get(f"{key}.on"):
                st.date_input(label, key=key, min_value=date(2023, 1, 1),
                              max_value=date(2060, 12, 1), label_visibility="collapsed")
        elif wkind in ("choice", "opt_choice"):
            if wkind == "opt_choice":
                st.checkbox(f"{label}: set", key=f"{key}.on", help=help_)
                if not ss.get(f"{key}.on"):
                    continue
            st.selectbox(label, list(opts), key=key, help=help_)
        elif wkind == "providers":
            st.multiselect(label, list(opts), key=key, help=help_)
        elif wkind == "float":
            hi = hi if hi is not None else (lo or 0) + 10
            lo = lo if lo is not None else 0.0
            step = _nice_step(hi - lo)
            st.slider(label, min_value=float(lo + (step if lo_open else 0)),
                      max_value=float(hi - (step if hi_open else 0)), step=step, key=key,
                      help=help_)
        elif wkind == "int":
            st.number_input(label, min_value=int(lo if lo is not None else 0),
                            max_value=int(hi if hi is not None else 10_000), step=1, key=key,
                            help=help_)
        elif wkind == "bool":
            st.checkbox(label, key=key, help=help_)
        elif wkind == "str":
            st.text_input(label, key=key, help=help_)
        elif wkind == "tags":
            st.multiselect(label, [], key=key, accept_new_options=True, help=help_)
    st.button("Remove this event", key=f"btn.remove.{eid}", on_click=_on_remove_event,
              args=(eid,))


def _event_title(eid: int, kind: str) -> str:
    ss = _ss()
    parts = [EVENT_LABELS.get(kind, kind.replace("_", " ").capitalize())]
    if ss.get(f"events.{eid}.bloc.on", True) and ss.get(f"events.{eid}.bloc"):
        parts.append(str(ss[f"events.{eid}.bloc"]))
    start = ss.get(f"events.{eid}.start")
    if isinstance(start, date):
        parts.append(f"from {start:%Y-%m}")
    who = [*ss.get(f"events.{eid}.target.groups", []),
           *ss.get(f"events.{eid}.target.countries", [])]
    parts.append("→ " + (", ".join(who[:4]) + ("…" if len(who) > 4 else "") if who else "all"))
    return " ".join(parts)


def sidebar(all_presets: dict) -> None:
    """Presets, levers, events, assumptions, run settings, sharing and export."""
    ss = _ss()
    sb = st.sidebar
    with sb:
        st.toggle("Classroom mode", key="ui.classroom",
                  help="A guided lesson on how dependency builds up, with switches for each "
                  "mechanism.")
        names = [n for n, v in all_presets.items() if isinstance(v, Scenario)]
        if ss.get("ui.preset") not in names:
            ss["ui.preset"] = "baseline" if "baseline" in names else names[0]
        st.selectbox("Preset scenario", names, key="ui.preset", on_change=_on_preset,
                     format_func=lambda n: n.replace("_", " "),
                     help="Every file in scenarios/. Picking one loads all its settings.")
        chosen = all_presets.get(ss["ui.preset"])
        if isinstance(chosen, Scenario) and chosen.description:
            st.caption(chosen.description)
        for n, v in all_presets.items():
            if isinstance(v, ScenarioError):
                st.warning(f"Preset {n} is not valid and is not offered:\n\n{v}")
        st.markdown("**Levers** (what a policy maker sets)")
        for spec in LEVER_SPECS:
            _param_widget(spec, slider=True)
        events = ss.get("_events", [])
        with st.expander(f"Timeline of events ({len(events)})", expanded=bool(events)):
            for eid, kind in events:
                with st.container(border=True):
                    st.markdown(f"**{_event_title(eid, kind)}**")
                    _event_widgets(eid, kind)
            kinds = list(event_classes())
            if ss.get("ui.new_event") not in kinds:
                ss["ui.new_event"] = "security_shock" if "security_shock" in kinds else kinds[0]
            st.selectbox("New event", kinds, key="ui.new_event",
                         format_func=lambda k: EVENT_LABELS.get(k, k))
            st.button("Add event", key="btn.add_event", on_click=_on_add_event)
        with st.expander("Assumptions (what nobody controls; calibrated)", expanded=False):
            st.caption("Behavioural and ecosystem parameters. Defaults come from "
                       "calibration/parameters.json when it exists.")
            st.button("Reset assumptions to calibrated defaults", key="btn.reset_assumptions",
                      on_click=_on_reset_assumptions)
            for spec in ASSUMPTION_SPECS:
                _param_widget(spec, slider=False)
        with st.expander("Runs: seed, ensemble, resolution", expanded=False):
            st.number_input("Seed", min_value=0, max_value=2**31 - 1, step=1, key="run.seed",
                            help="The same seed gives the same result; the baseline uses the "
                            "same seeds (paired comparison).")
            st.slider("Ensemble size (runs)", 1, MAX_ENSEMBLE, key="run.ensemble",
                      help="Runs with seeds seed, seed+1, ...; bands show their spread. One run "
                      "is drawn first, the rest refine the bands.")
            st.select_slider("Firms per run", FIRM_CHOICES, key="run.firms",
                             format_func=lambda n: f"{n:,}",
                             help="Resolution of the synthetic firm population. 20,000 firms "
                             "take about 0.25 s per run.")
            draws, _ = load_posterior()
            if draws:
                st.checkbox(f"Include calibration uncertainty ({len(draws)} posterior draws)",
                            key="run.posterior")
            st.checkbox("Baseline uses my assumptions", key="run.same_assumptions",
                        help="Off: compare with scenarios/baseline.yaml as it is. On: baseline "
                        "policies under the assumptions set here, isolating the policy effect.")


def export_panel(user_sc: Scenario, sc: Scenario, plan: list[tuple[str, int]], n_firms: int,
                 info: dict, manifest: dict) -> None:
    """Share link (settings as set), downloads (the scenario as run) and upload (sidebar)."""
    ss = _ss()
    with st.sidebar.expander("Share and export", expanded=False):
        params = share_params(user_sc)
        base = ""
        try:
            base = st.context.url or ""
        except Exception:  # noqa: BLE001 - no browser context (tests)
            base = ""
        st.caption("Link to this exact page (scenario, seeds, view):")
        st.code(f"{base}?{urlencode(params)}", language=None, wrap_lines=True)
        stem = (sc.name or "scenario").replace(" ", "_")
        st.download_button("Scenario (YAML)", sc.to_yaml(), file_name=f"{stem}.yaml",
                           mime="application/x-yaml", key="btn.dl_yaml", on_click="ignore")
        st.download_button("Results (Parquet, zip)",
                           lambda: results_archive(plan, n_firms, "parquet", info),
                           file_name=f"{stem}_results_parquet.zip", mime="application/zip",
                           key="btn.dl_parquet", on_click="ignore",
                           help="Every ensemble member's frames (adoption, observables, "
                           "dependency, ecosystem, kpis, policies, cutoff), manifest.json and "
                           "the scenario. Runs the members again when clicked.")
        st.download_button("Results (CSV, zip)",
                           lambda: results_archive(plan, n_firms, "csv", info),
                           file_name=f"{stem}_results_csv.zip", mime="application/zip",
                           key="btn.dl_csv", on_click="ignore")
        st.download_button("Manifest (JSON)",
                           json.dumps({"app": info, "run": manifest}, indent=2, default=str),
                           file_name=f"{stem}_manifest.json", mime="application/json",
                           key="btn.dl_manifest", on_click="ignore")
        st.file_uploader("Load a scenario file (YAML)", type=["yaml", "yml"], key="io.upload",
                         on_change=_on_upload, max_upload_size=1,
                         help="Validated against the scenario schema; nothing in it is "
                         "executed.")
        msg = ss.get("_upload")
        if msg:
            (st.error if msg[0] == "error" else st.success)(msg[1])


def classroom_panel() -> None:
    """The guided lesson: step, explanation, suggested change, question, mechanism switches."""
    ss = _ss()
    i = int(ss.get("ui.step", 0))
    step = STEPS[i]
    with st.container(border=True):
        c1, c2, c3 = st.columns([1, 6, 1])
        c1.button("◀ Previous", key="btn.prev", on_click=_on_step_nav, args=(-1,),
                  disabled=i == 0)
        c3.button("Next ▶", key="btn.next", on_click=_on_step_nav, args=(1,),
                  disabled=i == len(STEPS) - 1)
        c2.selectbox("Lesson step", list(range(len(STEPS))), key="ui.step",
                     format_func=lambda k: STEPS[k].title, label_visibility="collapsed")
        st.markdown(f"#### {step.title}")
        st.write(step.explain)
        a, b = st.columns([3, 2])
        with a:
            st.markdown(f"**Suggested change:** {step.change_label}")
            st.button("Make this change", key="btn.apply_step", on_click=_on_apply_step,
                      type="primary")
            st.markdown(f"**Question for the class:** {step.question}")
            with st.expander("For the teacher: what students should notice"):
                st.write(step.notice)
        with b:
            st.markdown("**Mechanisms** (switch one off to see what it contributes)")
            for key, (label, what, _) in MECHANISMS.items():
                st.toggle(f"{label}: {what}", key=f"mech.{key}")
        st.info(CONDITIONAL_NOTE)


# --------------------------------------------------------------------------------------------
# Views


def _month_options(sc: Scenario) -> list[str]:
    n = sc.n_months
    return [f"{sc.start.year + (sc.start.month - 1 + k) // 12}-"
            f"{(sc.start.month - 1 + k) % 12 + 1:02d}" for k in range(n)]


def view_controls(sc: Scenario) -> tuple[str, int]:
    """View picker, region and date (shared by the views); returns the view and month index."""
    ss = _ss()
    months = _month_options(sc)
    if ss.get("view.date") not in months:
        ss["view.date"] = months[-1]
    if ss.get("ui.view") not in VIEWS:
        ss["ui.view"] = VIEWS[0]
    if ss.get("view.region") not in region_options():
        ss["view.region"] = "WLD"
    c1, c2, c3 = st.columns([5, 2, 3])
    with c1:
        view = st.segmented_control("View", VIEWS, key="ui.view", required=True)
    with c2:
        st.selectbox("Region", region_options(), key="view.region", format_func=region_name)
    with c3:
        st.select_slider("Date (headline numbers, maps, bars)", months, key="view.date")
    return view or VIEWS[0], months.index(ss["view.date"])


def draw_kpis(box, members, baseline, t: int) -> None:
    """Headline numbers with the paired change against the baseline."""
    ks = F.kpis(members, baseline, t)
    with box.container():
        cols = st.columns(len(ks))
        for col, k in zip(cols, ks):
            col.metric(k.label, k.text(), k.delta_text(), delta_color="off",
                       delta_arrow="auto" if abs(k.delta) > 1e-9 else "off",
                       help=f"{k.help}. Mean of {len(members)} run(s) in "
                       f"{members[0].dates[t]:%Y-%m}; change against the baseline with the same "
                       f"seeds: {k.delta_text().split(' vs')[0]} (range {k.range_text()}).")


PLOT_CONFIG = {"topojsonURL": "/app/static/", "displaylogo": False}
_DRAFT = {"on": False}  # the first, one-run drawing of a page run uses other element keys


def _chart(fig, key: str, **kw) -> None:
    """Draw a Plotly figure; maps load their base layer from the app's static folder."""
    st.plotly_chart(fig, key=key + (".draft" if _DRAFT["on"] else ""), config=PLOT_CONFIG,
                    **kw)


def draw_view(view: str, box, members, baseline, t: int, ctx: dict) -> None:
    """Draw one view's charts into a placeholder (called once per refinement)."""
    ss = _ss()
    region = ss["view.region"]
    rname = region_name(region)
    when = members[0].dates[t]
    with box.container():
        if view == "Shares":
            a, b = st.columns(2)
            with a:
                _chart(F.shares_figure(members, baseline, region, rname), "chart.shares")
            with b:
                _chart(F.bloc_compare_figure(members, baseline, region, rname), "chart.compare")
            st.caption("Left: stacked shares of all economic activity, including firms not yet "
                       "using AI (ensemble mean); dotted lines mark the baseline's boundaries. "
                       "Right: shares of AI use by bloc, scenario (solid) vs baseline (dotted); "
                       f"bands: {F.BAND[0]}th-{F.BAND[1]}th percentile of {len(members)} run(s).")
        elif view == "Map":
            table = F.country_table(members, t)
            btable = F.country_table(baseline, t) if ss.get("view.diff") and baseline else None
            a, b = st.columns(2)
            with a:
                _chart(F.leading_bloc_map(table, when), "chart.map_lead")
            with b:
                _chart(F.dependency_map(table, ss["view.measure"], when, btable),
                       "chart.map_dep")
            n_off = table.filter(~pl.col("on_map")).height
            st.caption(f"Natural Earth 1:110m shapes (offline). {n_off} small states have no "
                       "shape at this scale; they are in the table below.")
            with st.expander("Country table"):
                st.dataframe(table.drop("on_map").sort("country"), hide_index=True,
                             height=320)
        elif view == "Dependency":
            regions = [("WLD", "World")] + [(g, REGION_NAMES[g]) for g in INCOME_GROUPS]
            if region not in dict(regions):
                regions.append((region, rname))
            _chart(F.dependency_bars_figure(members, baseline, t, regions), "chart.dep_bars")
            st.caption("Infrastructure dependency: share of AI use on a bloc's APIs (can be cut "
                       "off overnight). Model dependency: share on its open weights (keeps "
                       "running, no updates). Solid lines below: infrastructure; dashed: model; "
                       "dotted: baseline.")
            a, b = st.columns(2)
            with a:
                _chart(F.dependency_lines_figure(members, baseline, region, rname),
                       "chart.dep_lines")
            with b:
                _chart(F.concentration_figure(members, baseline, region, rname), "chart.hhi")
                _chart(F.majority_figure(members, baseline), "chart.majority")
        elif view == "Why":
            draw_why(ctx, when, _DRAFT["on"])
        elif view == "Cut-off":
            draw_cutoff(ctx, members, baseline)
        elif view == "Calibration":
            draw_calibration(ctx, members)
        elif view == "Policies":
            draw_policies(members, baseline)


def draw_why(ctx: dict, when: date, draft: bool) -> None:
    """Driver decomposition (``sim.drivers``) for a country and month, scenario and baseline."""
    ss = _ss()
    country = ss["view.country"]
    if not has_module("drivers"):
        st.warning("The driver decomposition needs `sim/drivers.py`, which is not in this "
                   "build.")
        return
    yaml_s, seed = ctx["plan"][0]
    yaml_b, _ = ctx["base_plan"][0]
    try:
        df = cached_drivers(yaml_s, seed, ctx["firms"], country, when)
        dfb = cached_drivers(yaml_b, seed, ctx["firms"], country, when)
    except ValueError as exc:
        st.error(f"No decomposition for {region_name(country)} in {when:%Y-%m}: {exc}")
        return
    name = region_name(country)
    _chart(F.drivers_figure(df, dfb, name, when), "chart.why")
    wide = df.pivot(on="bloc", index="component", values="value")
    wide_b = dfb.pivot(on="bloc", index="component", values="value")
    c1, c2 = st.columns(2)
    c1.markdown("**Scenario** (utility units; `choice_share`: the bloc's share of the firms' "
                "choice probabilities)")
    c1.dataframe(wide, hide_index=True)
    c2.markdown("**Baseline** (same seed)")
    c2.dataframe(wide_b, hide_index=True)
    st.caption(f"Run with seed {seed} and {ctx['firms']:,} firms, stopped in {when:%Y-%m}. "
               "Each term is averaged over the country's firms (weighted by activity) and, "
               "within a bloc, over the providers they would pick. Lock-in is negative for the "
               "blocs a firm would have to switch to.")


def _stress_settings() -> tuple[str, tuple[str, ...], date, int | None]:
    ss = _ss()
    months = ss.get("stress.months", "for good")
    return (ss["stress.bloc"], tuple(ss["stress.groups"]),
            date.fromisoformat(ss["stress.at"] + "-01"),
            None if months == "for good" else int(str(months).split()[0]))


def draw_cutoff(ctx: dict, members, baseline) -> None:
    """Cut-off stress test: bloc B stops serving its APIs to groups G at date t.

    Runs ``sim.stress.cutoff_test`` on every ensemble member of the scenario and of the
    baseline (same seeds), and shows the disrupted share and the recovery in the chosen region.
    """
    ss = _ss()
    if not has_module("stress"):
        draw_own_cutoffs(members)
        return
    bloc, groups, at, months = _stress_settings()
    if not groups:
        st.info("Pick who is cut off.")
        return
    try:
        runs = [cached_stress(y, s, ctx["firms"], bloc, groups, at, months)
                for y, s in ctx["plan"][:len(members)]]
        bruns = [cached_stress(y, s, ctx["firms"], bloc, groups, at, months)
                 for y, s in ctx["base_plan"][:len(baseline)]]
    except ValueError as exc:
        st.error(f"Stress test not possible: {exc}")
        return
    region = ss["view.region"]
    if F.recovery(runs[0]["run"], region) is None:
        if region != "WLD":
            st.caption(f"{region_name(region)} is not cut off; showing the world.")
        region = "WLD"
    recs = [F.recovery(r["run"], region) for r in runs]
    brecs = [F.recovery(r["run"], region) for r in bruns]
    if recs[0] is None:
        st.info("Nobody in the target uses that bloc's APIs at that date: nothing is disrupted.")
        return
    c1, c2, c3 = st.columns(3)
    ds = [r["disrupted_share"] for r in recs]
    bds = [r["disrupted_share"] for r in brecs if r]
    c1.metric(f"AI use disrupted, {region_name(region)}", f"{100 * sum(ds) / len(ds):.1f}%",
              f"{100 * (sum(ds) / len(ds) - sum(bds) / len(bds)):+.1f} pp vs baseline"
              if bds else None, delta_color="off",
              help="Activity whose provider was cut off, as a share of the region's AI use the "
              f"month before. Range over runs: {100 * min(ds):.1f}-{100 * max(ds):.1f}%.")
    m90 = [r["months_to_90"] for r in recs if r["months_to_90"] is not None]
    c2.metric("Months until 90% is served again",
              f"{sum(m90) / len(m90):.1f}" if m90 else "not by the end",
              help=f"Mean over the {len(m90)} of {len(recs)} runs that got there.")
    bm90 = [r["months_to_90"] for r in brecs if r and r["months_to_90"] is not None]
    c3.metric("Same, in the baseline", f"{sum(bm90) / len(bm90):.1f}" if bm90 else "n/a")
    t0 = recs[0]["t0"]
    curves = np.stack([r["curve"][t0:] for r in recs])
    bcurves = np.stack([r["curve"][t0:] for r in brecs]) if all(brecs) and brecs else None
    span = f"for {months} months" if months else "for good"
    _chart(F.recovery_figure(list(range(curves.shape[1])), curves,
                             f"{bloc} stops serving its APIs to {', '.join(groups)} from "
                             f"{at:%Y-%m} ({span}): {region_name(region)}",
                             "months since the cut-off", bcurves), "chart.cutoff")
    top = runs[0]["summary"].filter(pl.col("region").is_in(list(country_names()))).head(15)
    st.markdown("**Most affected countries** (first run)")
    st.dataframe(top.with_columns(country=pl.col("region").replace_strict(
        country_names(), default=None)).select("country", pl.exclude("country")),
        hide_index=True)


def draw_own_cutoffs(members) -> None:
    """Recovery from the scenario's own cut-off events (when ``sim.stress`` is absent)."""
    recs = [F.recovery(m) for m in members]
    if recs[0] is None:
        st.info("This scenario has no API cut-off; add one in the sidebar's timeline.")
        return
    t0 = recs[0]["t0"]
    curves = np.stack([r["curve"][t0:] for r in recs if r])
    _chart(F.recovery_figure(list(range(curves.shape[1])), curves,
                             f"Recovery after the cut-off of {recs[0]['start']:%Y-%m}",
                             "months since the cut-off"), "chart.cutoff")


def cutoff_controls(sc: Scenario) -> None:
    """Controls of the stress test."""
    ss = _ss()
    months = [m for m in _month_options(sc) if m >= "2026-01"]
    if ss.get("stress.at") not in months:
        ss["stress.at"] = "2029-01" if "2029-01" in months else months[0]
    durations = ["for good", "6 months", "12 months", "24 months"]
    if ss.get("stress.months") not in durations:
        ss["stress.months"] = "for good"
    c1, c2, c3, c4 = st.columns([1, 3, 2, 1])
    c1.selectbox("Bloc cutting off", ["US", "CN", "EU"], key="stress.bloc")
    c2.multiselect("Who is cut off", sorted(known_groups()), key="stress.groups")
    c3.select_slider("From", months, key="stress.at")
    c4.selectbox("For", durations, key="stress.months")


def draw_calibration(ctx: dict, members) -> None:
    """Model against the real data points, with bands and the source of every point."""
    draws, meta = load_posterior()
    if meta:
        shown = {k: meta[k] for k in ("method", "date", "loss", "n_within", "n_targets",
                                      "evaluations", "until") if k in meta}
        if "data_hash" in meta:
            shown["data_hash"] = str(meta["data_hash"])[:12]
        st.caption("calibration/parameters.json: " + "; ".join(
            f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items())
            + f"; {len(draws)} posterior draws.")
    else:
        st.caption("calibration/parameters.json is not present yet: assumptions are prior "
                   "midpoints and bands come from seeds only.")
    if has_module("targets"):
        try:
            draw_targets(ctx, members)
            return
        except Exception as exc:  # noqa: BLE001 - fall back to the data panels
            st.warning(f"The calibration targets (sim/targets.py) could not be evaluated "
                       f"({exc}); showing the data points instead.")
    draw_data_panels(members)


def draw_targets(ctx: dict, members) -> None:
    """The calibration targets of ``sim.targets``: fit overview, one target in detail, table."""
    from sim import targets as T

    ss = _ss()
    targets = T.build_targets()
    runs = [cached_targets(y, s, ctx["firms"]) for y, s in ctx["plan"][:len(members)]]
    stats = np.array([r["stats"] for r in runs], dtype=float)
    ids = [t.id for t in targets]
    if ss.get("view.target") not in ids:
        ss["view.target"] = ids[0]
    _chart(F.targets_overview_figure(targets, stats), "chart.targets")
    st.caption("Each row is a real figure from calibration/data/; each dot is one run of this "
               "scenario, placed by its distance from the figure in units of the figure's "
               "tolerance (0: on the figure or inside its bounds). Colour: the source's "
               "reliability (H/M/L).")
    st.selectbox("Target shown in detail", ids, key="view.target")
    t = targets[ids.index(ss["view.target"])]
    a, b = st.columns([3, 2])
    with a:
        monthly = np.stack([r["monthly"][t.id] for r in runs if t.id in r["monthly"]])
        _chart(F.target_figure(t, members[0].dates, monthly), "chart.target")
    with b:
        st.markdown(f"**Compared with:** {t.output}")
        st.markdown(f"**Why this output:** {t.why}")
        if t.mismatch_why:
            st.markdown(f"**What differs:** {t.mismatch_why}")
        for row in t.rows:
            st.caption(f"{row.ref.file} line {row.line}: {row.ref.metric} · "
                       f"{row.ref.group} · {row.ref.date} = {row.value:g} ({row.unit}); "
                       f"reliability {row.reliability}; source: {row.source}"
                       + (f"; caveat: {row.caveat}" if row.caveat else ""))
        if t.source:
            st.caption(f"Source: {t.source}")
    within = [sum(bool(tg.within(v)) for v in stats[:, k] if np.isfinite(v))
              for k, tg in enumerate(targets)]
    table = pl.DataFrame({
        "target": ids, "kind": [t.kind for t in targets],
        "observed_low": [t.lo for t in targets], "observed_high": [t.hi for t in targets],
        "model_mean": np.nanmean(stats, axis=0),
        "model_p5": np.nanpercentile(stats, F.BAND[0], axis=0),
        "model_p95": np.nanpercentile(stats, F.BAND[1], axis=0),
        "runs_within": [f"{w}/{stats.shape[0]}" for w in within],
        "reliability": [t.reliability for t in targets],
        "source": ["; ".join(sorted({r.source for r in t.rows})) or t.source for t in targets]})
    st.markdown(f"**All {len(ids)} targets** ({stats.shape[0]} run(s) of this scenario; a "
                "point target is met within its tolerance, a bound or range when inside it)")
    st.dataframe(table, hide_index=True)


def draw_data_panels(members) -> None:
    """Model series against the comparable data rows of calibration/data/ (with sources)."""
    points = F.calibration_points()
    cols = st.columns(2)
    for k, panel in enumerate(F.PANELS):
        with cols[k % 2]:
            _chart(F.calibration_figure(members, points, panel), f"chart.cal_{panel}")
    st.markdown("**Data points compared** (triangles: lower/upper bounds; open circles: "
                "approximate; horizontal bars: a figure for a whole year)")
    shown = points.filter(pl.col("compared")).select(
        "date", "subject", "metric", "value", "unit", "reliability", "source", "caveat", "file")
    st.dataframe(shown, hide_index=True)


def draw_policies(members, baseline) -> None:
    """Policy log: events, recorded restrictions and countries' own decisions."""
    pol = members[0].policies
    st.markdown(f"**Policies in the scenario** (first run; {pol.height} entries)")
    st.dataframe(pol, hide_index=True, height=300)
    if baseline:
        counts = pol.group_by("action").len().join(
            baseline[0].policies.group_by("action").len(), on="action", how="full",
            suffix="_baseline", coalesce=True).fill_null(0)
        st.markdown("**Count by action, scenario vs baseline**")
        st.dataframe(counts.rename({"len": "scenario", "len_baseline": "baseline"}),
                     hide_index=True)


# --------------------------------------------------------------------------------------------
# Page


def _sync_url(sc: Scenario) -> None:
    want = share_params(sc)
    have = {k: st.query_params.get(k) for k in st.query_params.keys()}
    if have != want:
        st.query_params.from_dict(want)


def main() -> None:
    """Render the page."""
    ss = _ss()
    if not ss.get("_ready"):
        init_state({k: st.query_params.get(k) for k in st.query_params.keys()})
    _persist_widget_state()
    all_presets = presets()
    sidebar(all_presets)

    st.title("diffusim: who depends on whom in AI")
    for level, msg in ss.get("_messages", []):
        getattr(st, level)(msg)
    if ss.get("ui.classroom"):
        classroom_panel()
    else:
        st.caption(CONDITIONAL_NOTE)
    try:
        user_sc = scenario_from_state()
        effective = user_sc.with_values(mechanism_overrides()) if mechanism_overrides() \
            else user_sc
    except ScenarioError as exc:
        st.error(f"These settings are not a valid scenario, so nothing was run:\n\n{exc}")
        return
    if ss.get("_preset_dump") and _comparable(user_sc) != ss["_preset_dump"]:
        st.sidebar.caption(f"Modified from preset **{ss.get('ui.preset')}**.")
        st.sidebar.button("Reset to preset", key="btn.reset_preset", on_click=_on_reset_preset)
    base = baseline_scenario()
    if ss.get("run.same_assumptions"):
        data = base.model_dump(mode="json")
        data["assumptions"] = effective.assumptions.model_dump(mode="json")
        base = parse_scenario(data, "baseline")

    firms = int(ss["run.firms"])
    want = int(ss["run.ensemble"])
    n = capped_ensemble(firms, want)
    draws, _ = load_posterior()
    draws = draws if ss.get("run.posterior", True) else []
    plan = ensemble_plan(effective, int(ss["run.seed"]), n, draws)
    base_plan = ensemble_plan(base, int(ss["run.seed"]), n, draws)

    view, t = view_controls(effective)
    kpi_box = st.empty()
    if n < want:
        st.warning(f"Heavy request: {firms:,} firms × {want} runs is more than this page runs "
                   f"interactively ({FIRM_RUN_BUDGET:,} firm-runs). Showing {n} run(s). Use "
                   "fewer firms, or `diffusim sweep` for large ensembles.")
    if view == "Why":
        names = country_names()
        st.columns([2, 5])[0].selectbox("Country", sorted(names, key=names.get),
                                        key="view.country", format_func=lambda c: names[c])
    elif view == "Cut-off":
        cutoff_controls(effective)
    elif view == "Map":
        c1, c2 = st.columns([3, 2])
        c1.selectbox("Dependency shown on the right-hand map", list(F.DEPENDENCY_MEASURES),
                     key="view.measure", format_func=F.DEPENDENCY_MEASURES.get)
        c2.checkbox("Show the change against the baseline", key="view.diff")
    view_box = st.empty()
    status = st.empty()
    ctx = {"plan": plan, "base_plan": base_plan, "firms": firms}

    first = [run_summary(*plan[0], firms)]
    first_base = [run_summary(*base_plan[0], firms)]
    rest = plan[1:]
    cached_rest = all(is_computed(y, s, firms) for y, s in rest + base_plan[1:])
    if rest and not cached_rest:
        _DRAFT["on"] = True
        try:
            draw_kpis(kpi_box, first, first_base, t)
            draw_view(view, view_box, first, first_base, t, ctx)
        finally:
            _DRAFT["on"] = False
        status.caption(f"Refining: 1 of {n} runs shown…")
        time.sleep(0.03)  # let the server thread send the first drawing before the next runs
    members = first + [run_summary(y, s, firms) for y, s in rest]
    baseline = first_base + [run_summary(y, s, firms) for y, s in base_plan[1:]]
    draw_kpis(kpi_box, members, baseline, t)
    draw_view(view, view_box, members, baseline, t, ctx)
    mf = members[0].manifest
    status.caption(
        f"{n} run(s) × {firms:,} firms; seeds {plan[0][1]}–{plan[-1][1]}"
        + (f"; {len(draws)} posterior draws" if draws else "; seeds only (no posterior)")
        + f". diffusim {mf.get('package_version')} · commit {str(mf.get('git_commit'))[:12]}"
        f" · data {str(mf.get('data_hash'))[:12]}")
    info = {"created": datetime.now(UTC).isoformat(timespec="seconds"),
            "seeds": [s for _, s in plan], "n_firms": firms, "ensemble": n,
            "posterior_draws": len(draws), "mechanisms_off": sorted(mechanism_overrides()),
            "preset": ss.get("ui.preset"), "scenario": effective.model_dump(mode="json")}
    export_panel(user_sc, effective, plan, firms, info, mf)
    _sync_url(user_sc)
