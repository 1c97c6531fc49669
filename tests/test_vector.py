"""`--save vector`: polygons that rasterise back to the label map, read back with GDAL/OGR (pyogrio)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import random_image
from PIL import Image

rasterio = pytest.importorskip("rasterio", reason="the [geo] extra")
pyogrio = pytest.importorskip("pyogrio", reason="the [geo] extra")
shapely = pytest.importorskip("shapely", reason="the [geo] extra")
from rasterio.features import rasterize  # noqa: E402
from scipy import ndimage  # noqa: E402
from test_geo import PIXEL, SLIDE, segcli, write_raster  # noqa: E402

from segcli.io.vector import VectorWriter  # noqa: E402

pytestmark = pytest.mark.geo


def _components(labels: np.ndarray) -> int:
    """4-connected regions, counted class by class (scipy's labelling, not segcli's polygonizer)."""
    return sum(ndimage.label(labels == c)[1] for c in np.unique(labels))


@pytest.mark.parametrize("band", [100, 7, 1])
def test_bands_merge_into_the_regions_of_the_whole_map(tmp_path, band):
    rng = np.random.default_rng(3)
    labels = np.kron(rng.integers(0, 4, (20, 30)), np.ones((5, 5), int)).astype(np.uint8)
    labels[rng.random(labels.shape) < 0.05] = 3  # single pixels, diagonal neighbours
    labels[40:60, 40:80] = 1
    labels[45:55, 50:70] = 2  # a hole, crossing band edges
    path = tmp_path / "v.geojson"
    w = VectorWriter(path, labels.shape, ("a", "b", "c", "d"))
    for y in range(0, labels.shape[0], band):
        w.write(y, labels[y : y + band])
    w.close()
    features = json.loads(path.read_text())["features"]
    assert len(features) == _components(labels)  # one polygon per region, whatever the bands
    back = rasterize([(f["geometry"], f["properties"]["class"]) for f in features], out_shape=labels.shape, fill=255)
    assert (back == labels).all()
    assert sum(f["properties"]["area_px"] for f in features) == labels.size
    assert any(len(f["geometry"]["coordinates"]) > 1 for f in features)  # holes kept


def test_photo_polygons_are_pixel_geojson(cli, tiny_convnext_dir, tmp_path):
    Image.fromarray(random_image(48, 64, seed=21)).save(tmp_path / "a.png")
    out = tmp_path / "out"
    r = cli("predict", tmp_path / "a.png", "-m", tiny_convnext_dir, "-o", out, "--save", "vector")
    assert r.exit_code == 0, r.stderr
    labels = np.asarray(Image.open(out / "a.png"))
    doc = json.loads((out / "a.geojson").read_text())
    assert len(doc["features"]) == _components(labels)
    shapes = [(f["geometry"], f["properties"]["class"]) for f in doc["features"]]
    assert (rasterize(shapes, out_shape=labels.shape, fill=255) == labels).all()
    names = [c["name"] for c in json.loads((out / "classes.json").read_text())["classes"]]
    assert all(names[f["properties"]["class"]] == f["properties"]["name"] for f in doc["features"])
    bad = cli("predict", tmp_path / "a.png", "-m", tiny_convnext_dir, "-o", tmp_path / "o2", "--save", "vector",
              "--min-area", "10m2")  # fmt: skip
    assert bad.exit_code == 1 and "needs a raster with a projected CRS" in bad.stderr


@pytest.mark.slow  # three segcli processes through GDAL
def test_raster_polygons_keep_the_crs_and_rasterise_to_the_labels(tiny_convnext_dir, tmp_path):
    path = tmp_path / "r.tif"
    write_raster(path, 300, 420)
    out = tmp_path / "out"
    args = ["predict", path, "-m", tiny_convnext_dir, *SLIDE, "--crop", "64", "--stride", "48"]
    r = segcli(*args, "-o", out, "--save", "geotiff,vector", "--vector-format", "gpkg")
    assert r.returncode == 0, r.stderr
    with rasterio.open(out / "r.tif") as ds, rasterio.open(path) as src:
        labels, nodata, transform, crs = ds.read(1), ds.nodata, src.transform, src.crs
    meta, _, wkb, fields = pyogrio.raw.read(out / "r.gpkg")
    assert pyogrio.read_info(out / "r.gpkg")["crs"] == f"EPSG:{crs.to_epsg()}"
    names = list(meta["fields"])
    polys = shapely.from_wkb(wkb)
    classes = fields[names.index("class")]
    back = rasterize(
        zip(polys, classes.tolist(), strict=True), out_shape=labels.shape, transform=transform, fill=nodata
    )
    assert (back == labels).all()  # every pixel, nodata included (no polygon there)
    areas = fields[names.index("area_m2")]
    assert np.allclose(areas, fields[names.index("area_px")] * PIXEL**2)
    g = segcli(*args, "-o", tmp_path / "g", "--save", "vector")  # GeoJSON: WGS84 lon/lat
    assert g.returncode == 0, g.stderr
    info = pyogrio.read_info(tmp_path / "g" / "r.geojson")
    assert info["crs"] == "EPSG:4326" and info["features"] == len(polys)
    lon, lat = json.loads((tmp_path / "g" / "r.geojson").read_text())["features"][0]["geometry"]["coordinates"][0][0]
    assert 14 < lon < 16 and 44 < lat < 46  # UTM 33N, 500 km east, 5000 km north
    m = segcli(*args, "-o", tmp_path / "m", "--save", "vector", "--vector-format", "gpkg", "--min-area", "100m2")
    assert m.returncode == 0, m.stderr
    _, _, kept, kept_fields = pyogrio.raw.read(tmp_path / "m" / "r.gpkg")
    assert 0 < len(kept) < len(polys) and (kept_fields[3] >= 100).all()
