"""Outcomes: the model's monthly tallies turned into tidy polars frames (named reporters).

Regions are ISO3 country codes, ``WLD`` (world) and the income groups ``HIC``/``UMC``/``LMC``/
``LIC``; every aggregate is weighted by economic activity (firm weights, which sum to GDP).
Shares of usage (``share``, ``infra_dependency``, ``model_dependency``) are shares of all
activity for adoption and of AI-using activity for dependency.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl

from sim.inputs import INCOME_GROUPS
from sim.providers import BLOC_OF, BLOCS, IS_OPEN, N_PROVIDERS, PROVIDER_IDS, PROVIDERS

PROVIDER_COLS = (*PROVIDER_IDS, "none")
BLOC_COLS = tuple(p.bloc for p in PROVIDERS) + ("NONE",)
ACCESS_COLS = tuple(p.access for p in PROVIDERS) + ("none",)
SHARE_METRICS = ("hf_new_derivatives_share", "hf_downloads_share", "api_token_share",
                 "api_token_share_open_closed", "hf_downloads_share_family",
                 "api_token_share_family", "api_token_share_xcn",
                 "api_token_share_open_closed_xcn", "api_token_share_family_xcn")


def month_dates(start: date, n: int) -> list[date]:
    """Month starts from ``start``."""
    return [date(start.year + (start.month - 1 + i) // 12, (start.month - 1 + i) % 12 + 1, 1)
            for i in range(n)]


def region_matrix(iso3: tuple[str, ...], income: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Regions (countries, WLD, income groups) and their (R, C) membership matrix."""
    n = len(iso3)
    names = list(iso3) + ["WLD"] + list(INCOME_GROUPS)
    mat = np.zeros((len(names), n))
    mat[np.arange(n), np.arange(n)] = 1
    mat[n] = 1
    for k in range(len(INCOME_GROUPS)):
        mat[n + 1 + k] = income == k
    return names, mat


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros(np.broadcast_shapes(a.shape, b.shape)), where=b > 0)


def _labels(labels, index: np.ndarray) -> pl.Series:
    """A string column from a few labels and a long index (gathered in polars, not numpy)."""
    return pl.Series(list(labels), dtype=pl.String).gather(pl.Series(index, dtype=pl.UInt32))


def _dates(dates, index: np.ndarray) -> pl.Series:
    return pl.Series(np.array(dates, dtype="datetime64[D]"), dtype=pl.Date).gather(
        pl.Series(index, dtype=pl.UInt32))


def _long(dates: list[date], regions: list[str], cols: tuple[str, ...], values: np.ndarray,
          name: str, col_name: str) -> pl.DataFrame:
    n_t, n_r, n_k = values.shape
    n = n_t * n_r * n_k
    i = np.arange(n, dtype=np.uint32)
    return pl.DataFrame({
        "date": _dates(dates, i // (n_r * n_k)),
        "region": _labels(regions, (i // n_k) % n_r),
        col_name: _labels(cols, i % n_k),
        name: values.reshape(-1),
    })


def by_region(rmat: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(T, C, K) country values summed into (T, R, K) regions."""
    return np.matmul(rmat, values)


def adoption(usage: np.ndarray, dates, regions, rmat) -> pl.DataFrame:
    """Share of activity per (date, region, provider), with bloc and access columns."""
    reg = by_region(rmat, usage)
    share = _safe_div(reg, reg.sum(axis=2, keepdims=True))
    n_t, n_r, n_k = share.shape
    k = np.arange(n_t * n_r * n_k, dtype=np.uint32) % n_k
    df = _long(dates, regions, PROVIDER_COLS, share, "share", "provider")
    return df.with_columns(bloc=_labels(BLOC_COLS, k), access=_labels(ACCESS_COLS, k)).select(
        "date", "region", "provider", "bloc", "access", "share")


def dependency(usage: np.ndarray, dates, regions, rmat) -> pl.DataFrame:
    """Infrastructure (APIs) and model (open weights) dependency per bloc, of AI usage."""
    reg = by_region(rmat, usage[:, :, :N_PROVIDERS])
    tot = reg.sum(axis=2, keepdims=True)
    infra = np.stack([reg[:, :, (BLOC_OF == b) & ~IS_OPEN].sum(axis=2)
                      for b in range(len(BLOCS))], axis=2)
    model = np.stack([reg[:, :, (BLOC_OF == b) & IS_OPEN].sum(axis=2)
                      for b in range(len(BLOCS))], axis=2)
    infra = _safe_div(infra, tot)
    model = _safe_div(model, tot)
    df = _long(dates, regions, BLOCS, infra, "infra_dependency", "bloc")
    return df.with_columns(model_dependency=pl.Series(model.reshape(-1)))


def _bloc_shares(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(T, P) values -> (T, 4) bloc shares over the providers in ``mask``."""
    v = values * mask[None, :]
    by = np.stack([v[:, BLOC_OF == b].sum(axis=1) for b in range(len(BLOCS))], axis=1)
    return _safe_div(by, by.sum(axis=1, keepdims=True))


def observables(rec: dict, dates, dl_weight: float, china: int | None = None) -> pl.DataFrame:
    """Hugging Face-like observables, by bloc; each metric's values sum to 1 per date.

    ``api_token_share*`` count usage served through APIs and hosted open weights (self-hosted
    use excluded); the ``_xcn`` variants leave out firms in China (country index ``china``),
    the closer counterpart of a platform such as OpenRouter that serves mostly outside China.
    """
    new = rec["new_derivatives"]
    stock = rec["eco_stock"]
    builders = rec["builders"]
    world_use = rec["usage"][:, :, :N_PROVIDERS].sum(axis=1)
    hosted = world_use - rec["selfhost"].sum(axis=1)
    b_share = _safe_div(builders * IS_OPEN, (builders * IS_OPEN).sum(axis=1, keepdims=True))
    s_share = _safe_div(stock * IS_OPEN, (stock * IS_OPEN).sum(axis=1, keepdims=True))
    downloads = (1 - dl_weight) * b_share + dl_weight * s_share
    access = np.stack([hosted[:, ~IS_OPEN].sum(axis=1), hosted[:, IS_OPEN].sum(axis=1)], axis=1)
    keep = np.ones(rec["usage"].shape[1], bool)
    if china is not None:
        keep[china] = False
    hosted_x = (rec["usage"][:, keep, :N_PROVIDERS].sum(axis=1)
                - rec["selfhost"][:, keep].sum(axis=1))
    access_x = np.stack([hosted_x[:, ~IS_OPEN].sum(axis=1), hosted_x[:, IS_OPEN].sum(axis=1)],
                        axis=1)
    metrics = {
        "hf_new_derivatives_share": (BLOCS, _bloc_shares(new, IS_OPEN)),
        "hf_downloads_share": (BLOCS, _bloc_shares(downloads, IS_OPEN)),
        "api_token_share": (BLOCS, _bloc_shares(hosted, np.ones(N_PROVIDERS, bool))),
        "api_token_share_open_closed": (("closed", "open"),
                                        _safe_div(access, access.sum(axis=1, keepdims=True))),
        "hf_downloads_share_family": (tuple(np.array(PROVIDER_IDS)[IS_OPEN]),
                                      downloads[:, IS_OPEN]),
        "api_token_share_family": (PROVIDER_IDS,
                                   _safe_div(hosted, hosted.sum(axis=1, keepdims=True))),
        "api_token_share_xcn": (BLOCS, _bloc_shares(hosted_x, np.ones(N_PROVIDERS, bool))),
        "api_token_share_open_closed_xcn": (("closed", "open"), _safe_div(
            access_x, access_x.sum(axis=1, keepdims=True))),
        "api_token_share_family_xcn": (PROVIDER_IDS, _safe_div(
            hosted_x, hosted_x.sum(axis=1, keepdims=True))),
    }
    frames = []
    n_t = len(dates)
    d = np.array(dates, dtype="datetime64[D]")
    for metric, (groups, vals) in metrics.items():
        k = len(groups)
        frames.append(pl.DataFrame({
            "date": pl.Series(np.repeat(d, k), dtype=pl.Date),
            "metric": [metric] * (n_t * k),
            "group": np.tile(np.array(groups), n_t),
            "value": vals.reshape(-1),
        }))
    return pl.concat(frames)


def ecosystem(rec: dict, dates, dl_weight: float) -> pl.DataFrame:
    """Per open family: new derivatives, stock (thousands), builder and download shares."""
    n_t = len(dates)
    builders = rec["builders"] * IS_OPEN
    stock = rec["eco_stock"] * IS_OPEN
    b_share = _safe_div(builders, builders.sum(axis=1, keepdims=True))
    s_share = _safe_div(stock, stock.sum(axis=1, keepdims=True))
    open_ids = np.flatnonzero(IS_OPEN)
    k = len(open_ids)
    d = np.array(dates, dtype="datetime64[D]")
    return pl.DataFrame({
        "date": pl.Series(np.repeat(d, k), dtype=pl.Date),
        "provider": np.tile(np.array(PROVIDER_IDS)[open_ids], n_t),
        "bloc": np.tile(np.array(BLOC_COLS)[open_ids], n_t),
        "new_derivatives_k": rec["new_derivatives"][:, open_ids].reshape(-1),
        "derivatives_stock_k": rec["eco_stock"][:, open_ids].reshape(-1),
        "downloads_share": ((1 - dl_weight) * b_share + dl_weight * s_share)[:, open_ids]
        .reshape(-1),
    })


def kpis(usage: np.ndarray, dates, regions, rmat, n_countries: int) -> pl.DataFrame:
    """Adoption, provider concentration (HHI) per region; countries where each bloc leads."""
    reg = by_region(rmat, usage)
    tot = reg.sum(axis=2)
    ai = reg[:, :, :N_PROVIDERS]
    ai_share = _safe_div(ai, ai.sum(axis=2, keepdims=True))
    adoption_ = _safe_div(ai.sum(axis=2), tot)
    hhi = (ai_share ** 2).sum(axis=2)
    n_t = len(dates)
    d = np.array(dates, dtype="datetime64[D]")
    frames = []
    for metric, vals in (("ai_adoption", adoption_), ("hhi_providers", hhi)):
        frames.append(pl.DataFrame({
            "date": _dates(dates, np.arange(n_t * len(regions)) // len(regions)),
            "region": _labels(regions, np.arange(n_t * len(regions)) % len(regions)),
            "metric": metric,
            "value": vals.reshape(-1)}))
    cu = usage[:, :n_countries, :N_PROVIDERS]
    bloc_use = np.stack([cu[:, :, BLOC_OF == b].sum(axis=2) for b in range(len(BLOCS))], axis=2)
    has = bloc_use.sum(axis=2) > 0
    lead = np.argmax(bloc_use, axis=2)
    share_lead = _safe_div(bloc_use.max(axis=2), bloc_use.sum(axis=2))
    for b, bloc in enumerate(BLOCS):
        majority = ((lead == b) & has & (share_lead > 0.5)).sum(axis=1).astype(float)
        frames.append(pl.DataFrame({
            "date": pl.Series(d, dtype=pl.Date), "region": "WLD",
            "metric": f"majority_countries_{bloc}", "value": majority}))
    return pl.concat(frames)


def cutoff(rec: dict, dates, regions, rmat) -> pl.DataFrame:
    """Firms that lost their provider to a cut-off: their weight and the share served again.

    Per (date, region): ``disrupted_weight`` (activity of firms cut off so far),
    ``disrupted_share`` (that weight over the region's AI usage the month before the first
    cut-off), ``served_share`` (the part of it using some AI provider again).
    """
    dis = by_region(rmat, rec["disrupted"])
    use = by_region(rmat, rec["usage"][:, :, :N_PROVIDERS].sum(axis=2)[:, :, None])[:, :, 0]
    hit = np.flatnonzero(dis[:, :, 1].sum(axis=1) > 0)
    base = use[max(hit[0] - 1, 0)] if hit.size else np.zeros(len(regions))
    n_t, n_r = len(dates), len(regions)
    return pl.DataFrame({
        "date": _dates(dates, np.arange(n_t * n_r) // n_r),
        "region": _labels(regions, np.arange(n_t * n_r) % n_r),
        "disrupted_weight": dis[:, :, 1].reshape(-1),
        "disrupted_share": _safe_div(dis[:, :, 1], base[None, :]).reshape(-1),
        "served_share": _safe_div(dis[:, :, 0], dis[:, :, 1]).reshape(-1),
    })
