"""Rasters through GDAL (real rasterio, no mocks): windowed reading equals the in-memory path, the GeoTIFF
output keeps the georeference and nodata, areas follow pixel counts, bad rasters fail alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

rasterio = pytest.importorskip("rasterio", reason="rasterio is not installed (the [geo] extra)")
from helpers import run_cli  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402

from segcli import Segmenter  # noqa: E402
from segcli.engine.lazy import LazyImage  # noqa: E402
from segcli.engine.resample import resize_bilinear  # noqa: E402
from segcli.io.outputs import label_png  # noqa: E402
from segcli.io.pngstream import PngStream  # noqa: E402
from segcli.io.raster import Raster, RasterOptions  # noqa: E402

pytestmark = pytest.mark.geo
PIXEL = 0.5  # metres


def write_raster(
    path: Path, h: int, w: int, *, crs: str | None = "EPSG:32633", seed: int = 0, empty_from: int | None = None, **kw
) -> np.ndarray:
    """A 16-bit 3-band tiled GeoTIFF with blocky content and a nodata (0) border left and bottom."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(200, 4000, (3, h // 64 + 1, w // 64 + 1)).astype(np.uint16)
    a = np.kron(blocks, np.ones((1, 64, 64), dtype=np.uint16))[:, :h, :w]
    a = a + rng.integers(0, 300, (3, h, w)).astype(np.uint16)
    a[:, :, :37] = 0
    a[:, h - 23 :, :] = 0
    a[:, : h // 3, w * 3 // 5 :] = 0  # a corner with no data at all: windows there are not run
    if empty_from is not None:
        a[:, :, empty_from:] = 0
    profile = dict(driver="GTiff", width=w, height=h, count=3, dtype="uint16", nodata=0, tiled=True)
    profile.update(compress="deflate", transform=from_origin(500000, 5000000, PIXEL, PIXEL), crs=crs, **kw)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(a)
    return a


def segcli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "segcli", *map(str, args)], capture_output=True, text=True)


SLIDE = ["--resize", "none", "--mode", "slide", "--threads", "2"]


# several rows (5) and columns (6) of 256-pixel windows, the last of each off the 170-pixel stride; a no-data
# corner (the top 260 rows of the right 412 columns) that holds whole windows (2); the longer side ≥ 1024
# for two overview levels; the smallest such raster (the windowed run is the suite's longest)
BIG = (780, 1030)
WINDOWS = ["--crop", "256", "--stride", "170"]


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("geo") / "scene.tif"
    write_raster(path, *BIG)
    return path


@pytest.mark.slow
def test_windowed_raster_equals_in_memory_and_keeps_the_georeference(big, tiny_convnext_dir, tmp_path):
    out = tmp_path / "out"
    args = ["predict", big, "-o", out, "-m", tiny_convnext_dir, *SLIDE, *WINDOWS]
    args += ["--save", "json,label,geotiff", "--overviews"]
    r = segcli(*args)
    assert r.returncode == 0, r.stderr
    assert "Warning" not in r.stderr  # GDAL's notes (overviews of a palette band) are not the user's business
    with rasterio.open(out / "scene.tif") as ds, rasterio.open(big) as src:
        got = ds.read(1)
        assert (ds.crs, ds.transform, ds.width, ds.height) == (src.crs, src.transform, src.width, src.height)
        assert ds.nodata == 255 and ds.dtypes[0] == "uint8" and ds.colormap(1)[0][:3] != (0, 0, 0)
        assert ds.overviews(1) == [2, 4] and ds.profile["tiled"] and ds.profile["compress"] == "deflate"
        valid = src.read_masks(1) > 0
    # the in-memory path on the same pixels (the same RGB conversion), run as one decoded image
    raster = Raster(big)
    rgb, _ = raster.read(0, raster.height)
    seg = Segmenter.from_pretrained(str(tiny_convnext_dir))
    expected = seg.predict(rgb, resize="none", mode="slide", crop=256, stride=170)
    assert np.array_equal(got[valid], expected[valid])
    h, w = BIG  # no data: the left 37 columns, the bottom 23 rows, the top third of the right two fifths
    assert (got[~valid] == 255).all() and (~valid).sum() == 37 * h + 23 * w - 23 * 37 + (h // 3) * (w - w * 3 // 5)
    assert np.array_equal(np.asarray(Image.open(out / "scene.png")), got)  # the streamed PNG: same labels
    assert np.array_equal(np.asarray(Image.open(out / "scene_label.png")), got)
    doc = json.loads((out / "scene.json").read_text())
    assert doc["raster"]["crs"] == "EPSG:32633" and doc["raster"]["pixel_size"] == [PIXEL, PIXEL]
    assert doc["raster"]["nodata_pixels"] == int((~valid).sum())
    assert 0 < doc["raster"]["windows_skipped"] < doc["raster"]["windows"]
    counts = np.bincount(expected[valid], minlength=150)
    for c in doc["classes"]:
        assert c["pixels"] == counts[c["index"]]
        assert c["area_m2"] == pytest.approx(c["pixels"] * PIXEL * PIXEL)
        assert c["area_ha"] == pytest.approx(c["pixels"] * PIXEL * PIXEL / 1e4)
    assert sum(c["pixels"] for c in doc["classes"]) == int(valid.sum())
    again = run_cli(*args)  # the resume needs no second process (the first proved the GDAL path)
    assert again.exit_code == 0 and "0 done, 1 skipped" in again.stderr


@pytest.mark.slow
def test_resized_windowed_raster_equals_in_memory_next_to_nodata(tiny_convnext_dir, tmp_path):
    """A bilinear preset resize, computed per band of rows, with windows over nodata skipped: the same labels
    as resizing and running the decoded image (also next to the nodata, which the resize back reads)."""
    path = tmp_path / "r.tif"
    write_raster(path, 450, 700, empty_from=200)  # in the 300-row view (x 2/3): no data right of column 133
    out = tmp_path / "out"
    # 256-pixel windows (2 rows, 3 columns, the last off the stride): those right of column 133 are skipped
    proto = ["--preset", "mmseg", "--mode", "slide", "--resize", "300:4000", "--crop", "256", "--stride", "150"]
    r = segcli("predict", path, "-o", out, "-m", tiny_convnext_dir, *proto, "--save", "json,geotiff")
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "r.json").read_text())
    assert doc["inference"]["resample"] != "pil" and doc["raster"]["windows_skipped"] > 0
    with rasterio.open(out / "r.tif") as ds, rasterio.open(path) as src:
        got, valid = ds.read(1), src.read_masks(1) > 0
    raster = Raster(path)
    rgb, _ = raster.read(0, raster.height)
    seg = Segmenter.from_pretrained(str(tiny_convnext_dir))
    expected = seg.predict(rgb, preset="mmseg", mode="slide", resize="300:4000", crop=256, stride=150)
    assert np.array_equal(got[valid], expected[valid])


def test_photos_keep_the_pillow_path_with_geotiff(tiny_convnext_dir, tmp_path):
    """--save geotiff on a JPEG: decoded by Pillow (EXIF orientation applied), a .tif without georeference."""
    rng = np.random.default_rng(1)
    image = Image.fromarray(np.kron(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8), np.ones((10, 10, 1), np.uint8)))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: shown 60 wide, 80 tall
    image.save(tmp_path / "photo.jpg", exif=exif, quality=95)
    r = segcli(
        "predict", tmp_path / "photo.jpg", "-o", tmp_path / "out", "-m", tiny_convnext_dir, "--save", "geotiff,overlay"
    )
    assert r.returncode == 0, r.stderr
    png = np.asarray(Image.open(tmp_path / "out" / "photo.png"))
    with rasterio.open(tmp_path / "out" / "photo.tif") as ds:
        assert ds.crs is None and (ds.height, ds.width) == png.shape == (80, 60)
        assert np.array_equal(ds.read(1), png)
    assert (tmp_path / "out" / "photo_overlay.jpg").is_file()


def test_resized_rows_equal_the_whole_resize():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (301, 257, 3), dtype=np.uint8)
    lazy = LazyImage(lambda y1, y2: (image[y1:y2], None), image.shape[:2])
    for size in ((150, 129), (613, 520), (301, 100)):
        whole = resize_bilinear(image, size)
        view = lazy.resized(size)
        for y1, y2 in ((0, 37), (37, 150), (100, size[0])):
            assert np.array_equal(view[y1:y2, 5:90], whole[y1:y2, 5:90]), (size, y1, y2)


@pytest.mark.parametrize("classes", [150, 300])
def test_png_stream_equals_the_in_memory_png(classes, tmp_path):
    rng = np.random.default_rng(classes)
    labels = rng.integers(0, classes, (97, 131)).astype(np.uint16 if classes > 256 else np.uint8)
    palette = rng.integers(0, 256, (classes, 3), dtype=np.uint8)
    path = tmp_path / "x.png"
    with open(path, "wb") as f:
        stream = PngStream(f, labels.shape, palette, "abc")
        for y in range(0, 97, 40):
            stream.write(y, labels[y : y + 40])
        stream.close()
    ours, theirs = Image.open(path), Image.open(__import__("io").BytesIO(label_png(labels, palette, "abc")))
    assert np.array_equal(np.asarray(ours), np.asarray(theirs)) and ours.mode == theirs.mode
    assert ours.info["segcli"] == "abc"
    if classes <= 256:
        assert ours.getpalette() == theirs.getpalette()


@pytest.mark.slow
def test_bad_rasters_fail_alone(tiny_convnext_dir, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    write_raster(src / "nocrs.tif", 300, 400, crs=None)
    write_raster(src / "good.tif", 300, 400)
    with rasterio.open(
        src / "nan.tif", "w", driver="GTiff", width=64, height=64, count=1, dtype="float32", nodata=np.nan
    ) as ds:
        ds.write(
            np.where(np.arange(64)[None, None] < 10, np.nan, np.arange(64, dtype=np.float32))[None]
            .repeat(64, 1)
            .reshape(1, 64, 64)
        )
    with rasterio.open(src / "complex.tif", "w", driver="GTiff", width=64, height=64, count=1, dtype="complex64") as ds:
        ds.write(np.ones((1, 64, 64), dtype=np.complex64))
    data = (src / "good.tif").read_bytes()
    (src / "truncated.tif").write_bytes(data[: len(data) // 3])
    out = tmp_path / "out"
    r = segcli("predict", src, "-o", out, "-m", tiny_convnext_dir, *SLIDE, "--save", "json,geotiff")
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("segcli: error:")]
    assert len(errors) == 2, r.stderr
    assert any("complex.tif" in e and "complex" in e for e in errors)
    assert any("truncated.tif" in e for e in errors)
    nocrs = json.loads((out / "nocrs.json").read_text(), parse_constant=lambda c: pytest.fail(f"JSON has {c}"))
    assert nocrs["raster"]["crs"] is None and "area_m2" not in nocrs["classes"][0]
    assert (out / "good.tif").is_file() and not list(out.glob(".*tmp"))
    nan = json.loads((out / "nan.json").read_text(), parse_constant=lambda c: pytest.fail(f"JSON has {c}"))
    assert nan["raster"]["nodata"] == "nan" and nan["raster"]["nodata_pixels"] == 64 * 10

    bands = segcli("predict", src / "good.tif", "-o", tmp_path / "o2", "-m", tiny_convnext_dir, *SLIDE, "--bands", "4")
    assert bands.returncode == 1 and "--bands 4 is out of range: the raster has 3 band(s)" in bands.stderr


@pytest.mark.slow
def test_max_pixels_applies_to_decoded_images_not_windowed_rasters(tiny_convnext_dir, tmp_path):
    path = tmp_path / "r.tif"
    write_raster(path, 300, 400)
    small = ["--max-pixels", "10000", "-m", tiny_convnext_dir, "--save", "json"]
    windowed = segcli("predict", path, "-o", tmp_path / "a", *small, *SLIDE)
    assert windowed.returncode == 0, windowed.stderr
    whole = segcli("predict", path, "-o", tmp_path / "b", *small, "--mode", "whole")
    assert whole.returncode == 1 and "exceeds --max-pixels" in whole.stderr and "--mode slide" in whole.stderr
    overlay = segcli("predict", path, "-o", tmp_path / "c", *small, *SLIDE, "--save", "overlay")
    assert overlay.returncode == 1 and "--save overlay is not available for rasters" in overlay.stderr


def test_raster_options_are_checked():
    assert RasterOptions.parse("3,2,1", None, "1,99") == RasterOptions((3, 2, 1), None, (1.0, 99.0))
    for args in (
        ("0", None, None),
        ("1,2", None, None),
        (None, "5:1", None),
        (None, None, "98,2"),
        (None, "0:1", "2,98"),
    ):
        with pytest.raises(Exception, match="--"):
            RasterOptions.parse(*args)


@pytest.mark.slow
def test_raster_confidence_is_streamed_as_float_geotiffs(tiny_convnext_dir, tmp_path):
    from segcli.engine.merge import certainty

    path = tmp_path / "r.tif"
    write_raster(path, 300, 700)
    out = tmp_path / "out"
    save = ["--save", "json,confidence,entropy", "--low-confidence", "0.3"]
    r = segcli("predict", path, "-o", out, "-m", tiny_convnext_dir, *SLIDE, *save)
    assert r.returncode == 0, r.stderr
    with rasterio.open(path) as src:
        valid, crs, transform = src.read_masks(1) > 0, src.crs, src.transform
    maps = {}
    for kind in ("confidence", "entropy"):
        with rasterio.open(out / f"r_{kind}.tif") as ds:
            assert (ds.count, ds.dtypes[0], ds.crs, ds.transform, ds.descriptions) == (
                1,
                "float32",
                crs,
                transform,
                (kind,),
            )
            maps[kind] = ds.read(1)
    raster = Raster(path)
    rgb, _ = raster.read(0, raster.height)
    seg = Segmenter.from_pretrained(str(tiny_convnext_dir))
    pred = seg.run(rgb, resize="none", mode="slide", probs=True)
    top, ent = (t.numpy() for t in certainty(torch.from_numpy(pred.probs.astype(np.float32))))
    assert np.abs(maps["confidence"] - top)[valid].max() < 2e-3  # the float16 probabilities above
    assert np.abs(maps["entropy"] - ent)[valid].max() < 5e-3
    assert np.isnan(maps["confidence"][~valid]).all() and np.isnan(maps["entropy"][~valid]).all()
    doc = json.loads((out / "r.json").read_text())["confidence"]
    assert doc["uncertain_fraction"] == pytest.approx((maps["confidence"][valid] < 0.3).mean(), abs=1e-9)
    assert doc["mean"] == pytest.approx(float(maps["confidence"][valid].astype(np.float64).mean()), rel=1e-6)


@pytest.mark.slow  # two segcli processes through GDAL
def test_raster_probabilities_are_a_uint8_geotiff(tiny_convnext_dir, tmp_path):
    path = tmp_path / "r.tif"
    write_raster(path, 300, 700)
    out = tmp_path / "out"
    r = segcli("predict", path, "-o", out, "-m", tiny_convnext_dir, *SLIDE, "--save", "json,probs")
    assert r.returncode == 0, r.stderr
    with rasterio.open(out / "r_probs.tif") as ds, rasterio.open(path) as src:
        got = ds.read()
        assert (ds.count, ds.dtypes[0], ds.crs, ds.transform) == (150, "uint8", src.crs, src.transform)
        assert ds.scales[0] == pytest.approx(1 / 255) and ds.descriptions[:2] == ("wall", "building")
        valid = src.read_masks(1) > 0
    raster = Raster(path)
    rgb, _ = raster.read(0, raster.height)
    seg = Segmenter.from_pretrained(str(tiny_convnext_dir))
    expected = seg.run(rgb, resize="none", mode="slide", probs=True).probs.astype(np.float32)  # float16 [K, H, W]
    diff = np.abs(got.astype(np.float32) - np.rint(expected * 255))[:, valid]
    assert diff.max() <= 1 and (got[:, ~valid] == 0).all()
    again = segcli("predict", path, "-o", out, "-m", tiny_convnext_dir, *SLIDE, "--save", "json,probs")
    assert "0 done, 1 skipped" in again.stderr  # resume knows the raster's probabilities file
