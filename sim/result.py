"""Result: the frames of one run plus a manifest that describes it; written atomically.

Files written by :meth:`Result.write` (the output contract, see README "Output files"):
``adoption.parquet``, ``observables.parquet``, ``dependency.parquet``, ``manifest.json``, and
``ecosystem.parquet``, ``kpis.parquet``, ``policies.parquet``, ``cutoff.parquet``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np
import polars as pl

from sim import outcomes
from sim.inputs import ROOT, data_hash

FORMAT_VERSION = "1.0"
FRAMES = ("adoption", "observables", "dependency", "ecosystem", "kpis", "policies", "cutoff")


def package_version() -> str:
    """Installed version of diffusim."""
    try:
        return metadata.version("diffusim")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


def git_commit() -> str:
    """Commit of the source tree, with ``-dirty`` when it has uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True, timeout=5).stdout
        return head + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


_COMMIT: str | None = None


def _commit_cached() -> str:
    global _COMMIT
    if _COMMIT is None:
        _COMMIT = git_commit()
    return _COMMIT


class Result:
    """Everything one run produced: tallies, and frames built from them on first use.

    Frames (polars, tidy, one row per month x entity): ``adoption``, ``observables``,
    ``dependency``, ``ecosystem``, ``kpis``, ``policies``, ``cutoff``. They are built lazily, so a
    caller that needs only the observables (calibration) does not pay for the rest.
    """

    def __init__(self, frames: dict | None = None, manifest: dict | None = None,
                 builder: dict | None = None):
        self._frames = dict(frames or {})
        self._builder = builder or {}
        self.manifest = manifest or {}

    def _frame(self, name: str) -> pl.DataFrame:
        if name not in self._frames:
            self._frames[name] = self._builder[name]()
        return self._frames[name]

    adoption = property(lambda self: self._frame("adoption"))
    observables = property(lambda self: self._frame("observables"))
    dependency = property(lambda self: self._frame("dependency"))
    ecosystem = property(lambda self: self._frame("ecosystem"))
    kpis = property(lambda self: self._frame("kpis"))
    policies = property(lambda self: self._frame("policies"))
    cutoff = property(lambda self: self._frame("cutoff"))

    @classmethod
    def from_model(cls, model, wall_time: float) -> Result:
        """Wrap a finished :class:`~sim.model.DiffusionModel` (frames built on demand)."""
        sc = model.spec
        rec = model.record
        tab = model.countries
        dates = outcomes.month_dates(sc.start, model.n_months)
        regions, rmat = outcomes.region_matrix(tab.iso3, tab.income)
        dl = sc.assumptions.downloads_deriv_weight
        acts = model.actions + [
            {"date": dates[max(r.start, 0)],
             "country": ",".join(np.array(tab.iso3)[r.countries][:5]), "action": r.kind,
             "bloc": "", "reason": r.label, "origin": r.origin}
            for r in model.policies.rules
            if r.origin not in ("endogenous", "trigger") and r.start < len(dates)
        ]

        def policies():
            return pl.DataFrame(
                acts, schema={"date": pl.Date, "country": pl.String, "action": pl.String,
                              "bloc": pl.String, "reason": pl.String, "origin": pl.String},
            ).sort("date", "country", "action", maintain_order=True)

        manifest = {
            "format_version": FORMAT_VERSION,
            "package_version": package_version(),
            "git_commit": _commit_cached(),
            "seed": model.streams.seed,
            "n_firms": model.firms.n,
            "n_countries": tab.n,
            "months": model.n_months,
            "scenario": sc.model_dump(mode="json"),
            "parameters": {**{f"levers.{k}": v for k, v in
                              sc.levers.model_dump(mode="json").items()},
                           **{f"assumptions.{k}": v for k, v in
                              sc.assumptions.model_dump(mode="json").items()}},
            "data_hash": data_hash(),
            "imputed_country_fields": {k: list(v) for k, v in tab.imputed.items()},
            "wall_time_s": round(wall_time, 4),
        }
        builder = {
            "adoption": lambda: outcomes.adoption(rec["usage"], dates, regions, rmat),
            "observables": lambda: outcomes.observables(
                rec, dates, dl, tab.iso3.index("CHN") if "CHN" in tab.iso3 else None),
            "dependency": lambda: outcomes.dependency(rec["usage"], dates, regions, rmat),
            "ecosystem": lambda: outcomes.ecosystem(rec, dates, dl),
            "kpis": lambda: outcomes.kpis(rec["usage"], dates, regions, rmat, tab.n),
            "policies": policies,
            "cutoff": lambda: outcomes.cutoff(rec, dates, regions, rmat),
        }
        result = cls(manifest=manifest, builder=builder)
        result.record = rec
        result.dates = dates
        return result

    def share(self, region: str = "WLD", by: str = "bloc") -> pl.DataFrame:
        """Wide table of shares over time for a region, by ``bloc``, ``access`` or provider."""
        df = self.adoption.filter(pl.col("region") == region)
        return (df.group_by("date", by).agg(pl.col("share").sum()).sort("date", by)
                .pivot(on=by, index="date", values="share"))

    def kpi(self, metric: str, region: str = "WLD") -> pl.DataFrame:
        """A KPI series."""
        return self.kpis.filter((pl.col("metric") == metric) & (pl.col("region") == region))

    def write(self, out_dir: str | Path) -> Path:
        """Write every frame and the manifest; each file appears whole or not at all."""
        out = Path(out_dir)
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=out, prefix=".probe-", delete=True)
            probe.close()
        except OSError as exc:
            raise OSError(f"--out {out}: cannot write there ({exc.strerror or exc})") from exc
        tmp = Path(tempfile.mkdtemp(dir=out, prefix=".tmp-"))
        try:
            for name in FRAMES:
                getattr(self, name).write_parquet(tmp / f"{name}.parquet", statistics=False)
            (tmp / "manifest.json").write_text(json.dumps(self.manifest, indent=2,
                                                          sort_keys=True, default=str))
            for f in sorted(tmp.iterdir()):
                os.replace(f, out / f.name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return out

    @classmethod
    def read(cls, out_dir: str | Path) -> Result:
        """Load a written result."""
        out = Path(out_dir)
        frames = {name: pl.read_parquet(out / f"{name}.parquet") for name in FRAMES}
        return cls(frames, manifest=json.loads((out / "manifest.json").read_text()))
