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
from dataclasses import dataclass, field
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


@dataclass
class Result:
    """Everything one run produced."""

    adoption: pl.DataFrame
    observables: pl.DataFrame
    dependency: pl.DataFrame
    ecosystem: pl.DataFrame
    kpis: pl.DataFrame
    policies: pl.DataFrame
    cutoff: pl.DataFrame
    manifest: dict = field(default_factory=dict)

    @classmethod
    def from_model(cls, model, wall_time: float) -> Result:
        """Build the frames from a finished :class:`~sim.model.DiffusionModel`."""
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
            for r in model.policies.rules if r.origin != "endogenous" and r.start < len(dates)
        ]
        policies = pl.DataFrame(
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
        return cls(
            adoption=outcomes.adoption(rec["usage"], dates, regions, rmat),
            observables=outcomes.observables(rec, dates, dl),
            dependency=outcomes.dependency(rec["usage"], dates, regions, rmat),
            ecosystem=outcomes.ecosystem(rec, dates, dl),
            kpis=outcomes.kpis(rec["usage"], dates, regions, rmat, tab.n),
            policies=policies,
            cutoff=outcomes.cutoff(rec, dates),
            manifest=manifest,
        )

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
        return cls(**frames, manifest=json.loads((out / "manifest.json").read_text()))
