"""Scenarios: every parameter declared once (default, unit, range, meaning, source), in YAML.

A scenario keeps apart, in the EMA Workbench vocabulary,

* ``levers``: what a policy maker sets (export controls, licences, prices, bans, ...);
* ``assumptions``: what nobody controls: behavioural and ecosystem parameters (calibrated;
  their defaults come from ``calibration/parameters.json`` when it exists) and structural
  uncertainties;
* ``events``: dated policies and shocks (bans, security shocks, API cut-offs, data-localisation
  laws, sovereign-AI programmes), each with a target;
* constants: the time window.

Unknown keys are rejected with the list of valid ones; values outside their range name the field,
the value and the allowed range. :func:`load_scenario` turns every failure into a
:class:`ScenarioError` with one readable message.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sim.inputs import ROOT

SECTORS = ("government", "finance", "health", "tech", "manufacturing", "services")
CALIBRATION_FILE = ROOT / "calibration" / "parameters.json"
MAX_SCENARIO_BYTES = 1_000_000


class ScenarioError(ValueError):
    """A scenario file or value is invalid; the message names the field and what is allowed."""


def param(default: Any, lo: float | None, hi: float | None, unit: str, meaning: str,
          source: str) -> Any:
    """Declare a parameter once: default, range, unit, meaning and source."""
    extra = {"unit": unit, "source": source}
    kwargs: dict[str, Any] = {"description": meaning, "json_schema_extra": extra}
    if lo is not None:
        kwargs["ge"] = lo
    if hi is not None:
        kwargs["le"] = hi
    return Field(default, **kwargs)


class Strict(BaseModel):
    """Base: unknown keys are errors; values are checked on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


NO_DATA = "assumption: no figure in the data; range wide on purpose"
PRIOR = "prior guess; the calibration replaces it when it fits this parameter"


class Levers(Strict):
    """What a policy maker sets."""

    export_controls: float = param(
        0.0, 0, 1, "fraction", "US chip export controls beyond those of 2025: the fraction of "
        "the Chinese providers' catch-up to the frontier that they block", "scenario lever")
    cn_licence_openness: float = param(
        1.0, 0, 1, "multiplier", "Chinese licence openness relative to 2025 (1 keeps Apache/MIT; "
        "0 closes the weights' licences)", "scenario lever; 2025 licences from model_releases.csv")
    cn_licence_change: date = param(
        date(2026, 1, 1), None, None, "month", "when the Chinese licence change takes effect",
        "scenario lever")
    meta_open_weights: bool = param(
        True, None, None, "flag", "Meta keeps releasing open Llama weights (false: Llama frozen "
        "at its 2025 quality)", "scenario lever")
    us_open_investment: float = param(
        1.0, 0, 3, "multiplier", "US open-weight investment: scales how fast US open models "
        "close their gap (0 freezes them; 2 doubles the pace)", "scenario lever")
    api_price_decline: float = param(
        0.3, 0, 0.9, "per year", "yearly fall of closed API list prices after 2025",
        NO_DATA + " (launch-price series missing: calibration README, Wanted #4)")
    distillation_efficiency: float = param(
        0.3, 0, 0.9, "per year", "yearly fall of the cost of running open weights (distillation "
        "into small models, cheaper inference)", NO_DATA)
    gap_convergence: float = param(
        0.0, 0, 2, "per year", "rate at which every provider's gap to the frontier decays after "
        "2025 (commoditisation)", "0: Epoch AI found the open-weight lag stable at ~3.5 months "
        "over 2023-2025 (performance_gap.csv)")
    include_recorded_restrictions: bool = param(
        True, None, None, "flag", "apply the DeepSeek restrictions recorded in countries.csv "
        "(Italy, Taiwan, Australia, ...) from their dates", "countries.csv deepseek_restriction")
    endogenous_policies: bool = param(
        True, None, None, "flag", "countries decide restrictions, sovereign-AI programmes and "
        "following allies at their yearly policy step", "model mechanism")


class Assumptions(Strict):
    """What nobody controls: behaviour, ecosystem dynamics and structural uncertainties."""

    b_cost: float = param(0.6, 0, 3, "per log-unit", "weight of ln(cost / income)", PRIOR)
    b_perf: float = param(1.0, 0, 10, "per 10 ECI points", "weight of the gap to the frontier",
                          PRIOR)
    b_trust: float = param(2.0, 0, 10, "per trust unit", "weight of trust (alignment, data, "
                           "security, shocks)", PRIOR)
    b_eco: float = param(0.4, 0, 3, "per log(1 + thousand derivatives)", "weight of the "
                         "Hugging Face ecosystem", PRIOR)
    b_peer: float = param(2.0, 0, 10, "per share", "weight of the provider's share among peers "
                          "in the firm's country", PRIOR)
    b_lic: float = param(1.0, 0, 5, "per openness unit", "weight of licence openness times the "
                         "firm's customisation need", PRIOR)
    switch_cost: float = param(1.5, 0, 10, "utility", "cost of switching away from the current "
                               "provider at zero tenure", PRIOR)
    switch_growth: float = param(0.3, 0, 3, "per year of tenure", "growth of the switching cost "
                                 "with tenure (lock-in), capped at 5 years", PRIOR)
    rho: float = param(0.08, 0.005, 1, "per month", "fraction of firms that reconsider their "
                       "provider each month", PRIOR)
    migration_rate: float = param(0.3, 0.01, 1, "per month", "chance that a firm which lost its "
                                  "provider (ban, cut-off) finds and sets up another in a month",
                                  NO_DATA)
    none_base: float = param(-3.0, -20, 20, "utility", "appeal of 'no AI yet' in 2023-01 "
                             "relative to ln-cost utilities", PRIOR)
    none_trend: float = param(0.5, 0, 5, "per year", "yearly fall of the appeal of 'no AI yet'",
                              PRIOR)
    b_internet: float = param(2.0, 0, 10, "per unit of internet use", "how much internet use "
                              "lowers the appeal of 'no AI yet'", PRIOR)
    w_data: float = param(0.5, 0, 3, "trust units", "trust lost when an API sends data to a "
                          "foreign bloc, times the country's data-protection concern", PRIOR)
    w_security: float = param(0.5, 0, 3, "trust units", "trust lost per unit of insecurity "
                              "(1 - security score)", PRIOR)
    eco_rate: float = param(3.0, 0, 50, "thousand derivatives per month", "new derivatives a "
                            "family gains per month at full builder share", PRIOR)
    eco_seed: float = param(0.05, 0, 1, "builder share", "builders experimenting with a family "
                            "whatever firms use (researchers, hobbyists)", PRIOR)
    eco_quality: float = param(1.0, 0, 5, "per 10 ECI points", "how strongly a family's gap to "
                               "the frontier lowers its new derivatives", PRIOR)
    downloads_deriv_weight: float = param(0.5, 0, 1, "fraction", "weight of the derivative "
                                          "stock (vs direct use) in download shares", PRIOR)
    security_unmeasured: float = param(0.49, 0.06, 0.92, "score", "security score of providers "
                                       "CAISI did not evaluate", "midpoint of the CAISI range "
                                       "(0.06 DeepSeek, 0.92 US models): maximal ignorance")
    selfhost_cost_ratio: float = param(1.0, 0.1, 5, "ratio", "cost of self-hosting open "
                                       "weights relative to the hosted price", NO_DATA)
    selfhost_capacity: float = param(0.5, 0, 1, "capacity", "technical capacity a firm needs to "
                                     "self-host open weights (otherwise it uses a host)", NO_DATA)
    export_control_gap: float = param(8.0, 0, 30, "ECI points", "extra gap that full export "
                                      "controls open for Chinese providers within a few years",
                                      NO_DATA + "; ~7 ECI = the average open-closed gap "
                                      "(Epoch AI)")
    unmeasured_gap: float = param(3.0, 0, 20, "ECI points", "how far below the weakest measured "
                                  "provider of the month a provider sits before its first "
                                  "measured release (back-cast quality)", PRIOR)
    frontier_growth: float = param(1.0, 0, 3, "multiplier", "frontier growth after 2025 "
                                   "relative to its measured 2023-2025 slope", "1 = measured")
    restrict_threshold: float = param(0.55, 0, 1, "risk", "perceived risk of a foreign bloc "
                                      "above which a country considers restricting it", PRIOR)
    restrict_prob: float = param(0.3, 0, 1, "per year", "chance a country above the threshold "
                                 "restricts the bloc in critical sectors that year", PRIOR)
    follow_prob: float = param(0.3, 0, 1, "per year", "chance a country follows an ally's "
                               "restriction, times their alignment", PRIOR)
    sovereign_threshold: float = param(0.6, 0, 1, "share", "dependency on one foreign bloc "
                                       "above which a country considers a sovereign-AI "
                                       "programme", "MODEL.md / issue example (60 %)")
    sovereign_prob: float = param(0.25, 0, 1, "per year", "chance a country above the "
                                  "threshold starts a programme, times its AI readiness", PRIOR)
    sovereign_subsidy: float = param(0.5, 0, 1, "fraction", "share of self-hosting cost a "
                                     "sovereign-AI programme pays, and of the capacity gap it "
                                     "closes", NO_DATA)
    policy_start_year: int = param(2026, 2023, 2040, "year", "first yearly policy step at which "
                                   "countries decide by themselves (earlier years replay the "
                                   "recorded restrictions)", "data window ends 2025-12")


class Target(Strict):
    """Who an event applies to: countries, groups and sectors (empty lists mean everyone)."""

    countries: list[str] = Field(default_factory=list, description="ISO3 codes")
    groups: list[str] = Field(default_factory=list, description=(
        "income groups (HIC, UMC, LMC, LIC), World Bank regions, memberships (EU, EEA, NATO, "
        "BRICS, SCO, OECD, G7, G20, BRI), ALIGNED_US / ALIGNED_CN, or ALL"))
    sectors: list[str] = Field(default_factory=list, description=f"sectors: {', '.join(SECTORS)}")

    @field_validator("sectors")
    @classmethod
    def _sectors(cls, v: list[str]) -> list[str]:
        bad = [s for s in v if s not in SECTORS]
        if bad:
            raise ValueError(f"unknown sector(s) {bad}; allowed: {', '.join(SECTORS)}")
        return v

    @field_validator("countries")
    @classmethod
    def _iso3(cls, v: list[str]) -> list[str]:
        from sim.countries import known_iso3

        known = known_iso3()
        bad = [c for c in v if c not in known]
        if bad:
            raise ValueError(f"unknown ISO3 code(s) {bad}; allowed: the {len(known)} codes of "
                             "countries.csv (UN members and Taiwan)")
        return v

    @field_validator("groups")
    @classmethod
    def _groups(cls, v: list[str]) -> list[str]:
        from sim.countries import known_groups

        known = known_groups()
        bad = [g for g in v if g not in known]
        if bad:
            raise ValueError(f"unknown group(s) {bad}; allowed: {', '.join(sorted(known))}")
        return v


Bloc = Literal["US", "CN", "EU"]


class _Event(Strict):
    """Common fields: a time window, a target and, for graded events, a ramp."""

    start: date = Field(description="first month the event applies (YYYY-MM-DD)")
    end: date | None = Field(None, description="first month it no longer applies; none = "
                             "for good")
    ramp_months: int = Field(0, ge=0, le=120, description="months to reach full strength "
                             "(graded events only)")
    target: Target = Field(default_factory=Target)
    note: str = Field("", max_length=500)

    @model_validator(mode="after")
    def _order(self):
        if self.end is not None and self.end <= self.start:
            raise ValueError(f"end {self.end} must be after start {self.start}")
        if self.ramp_months and self.kind in ("ban", "cutoff"):
            raise ValueError(f"ramp_months applies to graded events only, not to a {self.kind}")
        return self


class Ban(_Event):
    """Firms in the target may not use the bloc's (or the listed providers') models."""

    kind: Literal["ban"] = "ban"
    bloc: Bloc | None = None
    providers: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _what(self):
        from sim.providers import PROVIDER_IDS

        if self.bloc is None and not self.providers:
            raise ValueError("a ban needs a bloc or a list of providers")
        bad = [p for p in self.providers if p not in PROVIDER_IDS]
        if bad:
            raise ValueError(f"unknown provider(s) {bad}; allowed: {', '.join(PROVIDER_IDS)}")
        return self


class SecurityShock(_Event):
    """A security incident that lowers trust in a bloc's models, decaying with a half-life."""

    kind: Literal["security_shock"] = "security_shock"
    bloc: Bloc
    size: float = Field(1.0, ge=0, le=5, description="trust units lost at the start")
    half_life_months: float = Field(12.0, gt=0, le=240)


class Cutoff(_Event):
    """The bloc stops serving its APIs to the target from start to end (or for good)."""

    kind: Literal["cutoff"] = "cutoff"
    bloc: Bloc


class DataLocalisation(_Event):
    """A data-localisation law: foreign APIs lose trust in the target countries."""

    kind: Literal["data_localisation"] = "data_localisation"
    strength: float = Field(1.0, ge=0, le=5, description="added data-protection concern")


class SovereignAI(_Event):
    """A sovereign-AI programme subsidising self-hosted open weights in the target."""

    kind: Literal["sovereign_ai"] = "sovereign_ai"
    subsidy: float = Field(0.5, ge=0, le=1)


class Trigger(_Event):
    """A state-triggered policy, taken once per country when its dependency passes a level.

    From ``start``, any target country whose AI usage depends on one foreign bloc more than
    ``threshold`` takes ``action`` (once).
    ``sovereign_ai`` starts a sovereign-AI programme with ``subsidy``; ``restrict`` bans that
    bloc's models in the target sectors (default: government, finance, health).
    """

    kind: Literal["trigger"] = "trigger"
    bloc: Bloc | None = Field(None, description="the bloc whose dependency is watched; none = "
                              "any foreign bloc")
    dependency: Literal["total", "infra", "model"] = "total"
    threshold: float = Field(0.6, gt=0, lt=1)
    action: Literal["sovereign_ai", "restrict"] = "sovereign_ai"
    subsidy: float = Field(0.5, ge=0, le=1)


Event = Annotated[Ban | SecurityShock | Cutoff | DataLocalisation | SovereignAI | Trigger,
                  Field(discriminator="kind")]
EVENT_KINDS = (Ban, SecurityShock, Cutoff, DataLocalisation, SovereignAI, Trigger)


def calibrated_defaults(path: Path = CALIBRATION_FILE) -> dict[str, float]:
    """Calibrated parameter values (posterior medians) when the calibration file exists."""
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return dict(data.get("parameters", {}))


class Scenario(Strict):
    """A complete, validated scenario."""

    name: str = "unnamed"
    description: str = ""
    start: date = date(2023, 1, 1)
    end: date = date(2035, 12, 1)
    levers: Levers = Field(default_factory=Levers)
    assumptions: Assumptions = Field(default_factory=Assumptions)
    events: list[Event] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _calibrated(cls, data: Any) -> Any:
        if isinstance(data, dict):
            given = data.get("assumptions") or {}
            if isinstance(given, dict):
                data = {**data, "assumptions": {**calibrated_defaults(), **given}}
        return data

    @model_validator(mode="after")
    def _window(self):
        if self.start != date(2023, 1, 1):
            raise ValueError(f"start {self.start} must be 2023-01-01 (the calibration window)")
        if self.end <= self.start or self.end > date(2060, 12, 1):
            raise ValueError(f"end {self.end} must be after {self.start} and by 2060-12")
        return self

    @property
    def n_months(self) -> int:
        """Number of monthly steps from start to end inclusive."""
        return (self.end.year - self.start.year) * 12 + self.end.month - self.start.month + 1

    def to_yaml(self) -> str:
        """The scenario as YAML (round-trips through :func:`parse_scenario`)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def with_values(self, values: dict[str, Any]) -> Scenario:
        """A copy with ``section.name`` (or bare name) values replaced, validated."""
        data = self.model_dump(mode="json")
        for key, value in values.items():
            section, _, name = key.rpartition(".")
            if not section:
                section = "levers" if name in Levers.model_fields else "assumptions"
            if section not in ("levers", "assumptions") or name not in data[section]:
                valid = [f"levers.{k}" for k in Levers.model_fields] + \
                        [f"assumptions.{k}" for k in Assumptions.model_fields]
                raise ScenarioError(f"unknown parameter {key!r}; valid: {', '.join(valid)}")
            data[section][name] = value
        return parse_scenario(data)


def _format_error(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        value = err.get("input")
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            parent = _parent_fields(err["loc"])
            msg = f"unknown key; valid keys here: {', '.join(parent)}" if parent else \
                "unknown key"
        shown = repr(value) if not isinstance(value, dict | list) else type(value).__name__
        if len(shown) > 80:
            shown = shown[:77] + "..."
        lines.append(f"{source}: {loc}: {msg} (got {shown})")
    return "\n".join(lines)


def _parent_fields(loc: tuple) -> list[str]:
    model: Any = Scenario
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if model is None or not hasattr(model, "model_fields"):
            return []
        field = model.model_fields.get(part)
        if field is None:
            # a discriminated event kind: take the class named by the tag
            kinds = {c.model_fields["kind"].default: c for c in EVENT_KINDS}
            model = kinds.get(part)
            continue
        ann = field.annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if model is None and part == "events":
            return []
        if model is None and part == "target":
            model = Target
    return list(model.model_fields) if model is not None and hasattr(model, "model_fields") \
        else []


def parse_scenario(data: Any, source: str = "scenario") -> Scenario:
    """Validate a mapping into a :class:`Scenario`, raising :class:`ScenarioError`."""
    if data is None:
        raise ScenarioError(f"{source}: empty scenario (expected a mapping with keys "
                            f"{', '.join(Scenario.model_fields)})")
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: top level must be a mapping with keys "
                            f"{', '.join(Scenario.model_fields)} (got {type(data).__name__})")
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(_format_error(exc, source)) from None


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a YAML scenario file."""
    path = Path(path)
    if not path.is_file():
        raise ScenarioError(f"{path}: no such scenario file")
    size = path.stat().st_size
    if size > MAX_SCENARIO_BYTES:
        raise ScenarioError(f"{path}: file is {size} bytes; a scenario may be at most "
                            f"{MAX_SCENARIO_BYTES} bytes")
    return parse_yaml(path.read_bytes(), str(path))


def parse_yaml(text: bytes | str, source: str = "scenario") -> Scenario:
    """Validate YAML text into a :class:`Scenario`."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ScenarioError(f"{source}: not UTF-8 text") from None
    if len(text.encode()) > MAX_SCENARIO_BYTES:
        raise ScenarioError(f"{source}: a scenario may be at most {MAX_SCENARIO_BYTES} bytes")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ScenarioError(f"{source}: malformed YAML{where}: {problem}") from None
    return parse_scenario(data, source)


def parameter_table() -> str:
    """Markdown table of every lever and assumption: name, default, range, unit, meaning, source.

    Built from the same declarations as validation, the JSON schema and the app's sliders; the
    ODD document embeds it (a test keeps the two equal). Defaults of the assumptions are the
    calibrated values from ``calibration/parameters.json`` when that file exists.
    """
    lines = ["| parameter | default | range | unit | meaning | source |",
             "|---|---|---|---|---|---|"]
    resolved = Scenario()  # assumptions carry the calibrated defaults when they exist
    calibrated = calibrated_defaults()
    intervals, fixed = {}, {}
    if CALIBRATION_FILE.is_file():
        info = json.loads(CALIBRATION_FILE.read_text())
        intervals, fixed = info.get("intervals_90", {}), info.get("fixed", {})
    for section, model in (("levers", Levers), ("assumptions", Assumptions)):
        defaults = getattr(resolved, section)
        for name, field in model.model_fields.items():
            lo = hi = None
            for m in field.metadata:
                lo = getattr(m, "ge", lo)
                hi = getattr(m, "le", hi)
            extra = field.json_schema_extra or {}
            rng = f"{lo} to {hi}" if lo is not None or hi is not None else "-"
            value = getattr(defaults, name)
            source = extra.get("source", "")
            if section == "assumptions" and name in calibrated:
                lo90, _, hi90 = intervals.get(name, (None, None, None))
                band = f", 90% interval {lo90:.3g} to {hi90:.3g}" if lo90 is not None else ""
                source = f"calibrated: posterior median (calibration/parameters.json{band})"
                value = f"{value:.4g}"
            elif section == "assumptions" and name in fixed:
                source = f"{source}; not fitted: {fixed[name].get('why', '')}"
            lines.append(f"| `{section}.{name}` | {value} | {rng} | {extra.get('unit', '')} | "
                         f"{field.description} | {source} |")
    return "\n".join(lines)
