#!/usr/bin/env python3
"""Build countries_110m.geojson from the npm `world-atlas` tarball.

Usage (build-time only; country_converter is NOT a project dependency):

    cd /tmp && npm pack world-atlas@2            # -> world-atlas-2.0.2.tgz
    /root/.pyenv/versions/3.12.1/bin/python3.12 -m venv /tmp/geovenv
    /tmp/geovenv/bin/pip install country_converter
    /tmp/geovenv/bin/python sim/geo/build_shapes.py /tmp/world-atlas-2.0.2.tgz \
        [--out sim/geo/countries_110m.geojson]

Reads package/countries-110m.json (TopoJSON, Natural Earth 1:110m, ids are
ISO 3166-1 numeric codes as strings), decodes it to GeoJSON in pure Python
(equivalent to topojson-client's `topo2geo`), maps numeric ids to ISO 3166-1
alpha-3 (World Bank style: Kosovo -> XKX), rounds coordinates to 2 decimals
and writes a compact FeatureCollection whose features have
`id` = ISO3 and `properties = {"iso3", "name"}`.
Features with no ISO3 (N. Cyprus, Somaliland) are dropped.

It also writes topojson/world_110m.json, an EMPTY plotly base-layer topology.
plotly.js (incl. the copy bundled in Streamlit) fetches
<topojsonURL>/world_110m.json for every geo subplot whose trace has a
`locationmode` -- including locationmode="geojson-id" -- and the default
topojsonURL is https://cdn.plot.ly/un/. Offline that fetch fails and the
whole map is not drawn. Serving this stub (config={"topojsonURL": ...}) or
pre-seeding window.PlotlyGeoAssets.topojson.world_110m with it avoids the
fetch. Base layers (land, coastlines, ...) are then empty; country shapes
come from countries_110m.geojson.
"""
import argparse
import json
import logging
import sys
import tarfile
from pathlib import Path

MEMBER = "package/countries-110m.json"
NDIGITS = 2
# plotly.js base-layer object names (geo `layerNameToAdjective` minus frame)
PLOTLY_LAYERS = ("coastlines", "countries", "lakes", "land", "ocean",
                 "rivers", "subunits")
# Features without a numeric id in world-atlas, mapped by name.
# (None = drop: not an ISO 3166-1 entity.)
BY_NAME = {"Kosovo": "XKX", "N. Cyprus": None, "Somaliland": None}


def load_topology(tarball: Path) -> dict:
    with tarfile.open(tarball, "r:gz") as tf:
        return json.load(tf.extractfile(MEMBER))


def decode_arcs(topo: dict) -> list:
    """Delta-decode and dequantize all arcs."""
    tr = topo.get("transform")
    out = []
    for arc in topo["arcs"]:
        if tr:
            (sx, sy), (tx, ty) = tr["scale"], tr["translate"]
            x = y = 0
            pts = []
            for p in arc:
                x += p[0]
                y += p[1]
                pts.append((x * sx + tx, y * sy + ty))
        else:
            pts = [(p[0], p[1]) for p in arc]
        out.append(pts)
    return out


def ring(arcs: list, idx: list) -> list:
    """Stitch arc indices into a ring (negative index = reversed arc ~i)."""
    pts = []
    for i in idx:
        a = arcs[i] if i >= 0 else arcs[~i][::-1]
        pts.extend(a[1:] if pts else a)  # drop shared vertex between arcs
    return pts


def clean_ring(pts: list) -> list | None:
    """Round, drop consecutive duplicates, keep closed; None if degenerate."""
    out = []
    for x, y in pts:
        p = [round(x, NDIGITS), round(y, NDIGITS)]
        if not out or p != out[-1]:
            out.append(p)
    if out and out[0] != out[-1]:
        out.append(out[0])
    return out if len(out) >= 4 else None


def polygon(arcs: list, rings_idx: list) -> list | None:
    rings = [clean_ring(ring(arcs, r)) for r in rings_idx]
    if rings[0] is None:  # exterior collapsed
        return None
    return [r for r in rings if r is not None]


def geometry(arcs: list, g: dict) -> dict | None:
    if g["type"] == "Polygon":
        p = polygon(arcs, g["arcs"])
        return {"type": "Polygon", "coordinates": p} if p else None
    if g["type"] == "MultiPolygon":
        ps = [p for p in (polygon(arcs, pa) for pa in g["arcs"]) if p]
        if not ps:
            return None
        if len(ps) == 1:
            return {"type": "Polygon", "coordinates": ps[0]}
        return {"type": "MultiPolygon", "coordinates": ps}
    raise ValueError(f"unsupported geometry type {g['type']}")


def build(tarball: Path, out: Path) -> dict:
    import country_converter as coco  # build-time only

    logging.getLogger("country_converter").setLevel(logging.ERROR)
    cc = coco.CountryConverter()
    topo = load_topology(tarball)
    arcs = decode_arcs(topo)
    feats, dropped = [], []
    for g in topo["objects"]["countries"]["geometries"]:
        name = g.get("properties", {}).get("name", "")
        num = g.get("id")
        if num:
            iso3 = cc.convert(str(int(num)), src="ISOnumeric", to="ISO3",
                              not_found=None)
            if isinstance(iso3, list):
                iso3 = iso3[0] if iso3 else None
        else:
            iso3 = BY_NAME.get(name)
        if not iso3:
            dropped.append((num, name))
            continue
        geom = geometry(arcs, g)
        if geom is None:
            dropped.append((num, name + " (degenerate at 2dp)"))
            continue
        feats.append({"type": "Feature", "id": iso3,
                      "properties": {"iso3": iso3, "name": name},
                      "geometry": geom})
    ids = [f["id"] for f in feats]
    dups = {i for i in ids if ids.count(i) > 1}
    if dups:
        raise SystemExit(f"duplicate ISO3 ids: {sorted(dups)}")
    feats.sort(key=lambda f: f["id"])
    fc = {"type": "FeatureCollection", "features": feats}
    out.write_text(json.dumps(fc, separators=(",", ":")) + "\n")
    print(f"wrote {out}: {len(feats)} features, {out.stat().st_size} bytes")
    for num, name in dropped:
        print(f"dropped: id={num!r} name={name!r}", file=sys.stderr)
    return fc


def write_plotly_stub(out: Path) -> None:
    stub = {"type": "Topology", "arcs": [],
            "objects": {k: {"type": "GeometryCollection", "geometries": []}
                        for k in PLOTLY_LAYERS}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(stub, separators=(",", ":")) + "\n")
    print(f"wrote {out} (empty plotly base-layer topology)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tarball", type=Path, help="world-atlas-2.x.y.tgz from npm pack")
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).with_name("countries_110m.geojson"))
    args = ap.parse_args()
    build(args.tarball, args.out)
    write_plotly_stub(args.out.parent / "topojson" / "world_110m.json")


if __name__ == "__main__":
    main()
