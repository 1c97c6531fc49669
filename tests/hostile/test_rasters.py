"""Rasters that make GDAL open more than the input: VRTs whose sources are URLs, other folders, FIFOs, raw
bands over /etc/passwd; XML "rasters" that are network clients; values float64 cannot scale. Each is its
file's one line (or a correct result), in bounded time, and no request leaves the machine: a local HTTP
server named by the files must receive none."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers import no_hang

rasterio = pytest.importorskip("rasterio", reason="rasterio is not installed (the [geo] extra)")

from segcli.errors import ImageError  # noqa: E402
from segcli.io.raster import Raster, RasterOptions  # noqa: E402

pytestmark = pytest.mark.geo


class _Server:
    """An HTTP server on 127.0.0.1 that records every request (and serves a small GeoTIFF)."""

    def __init__(self, body: bytes) -> None:
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _send(self, head: bool) -> None:
                outer.requests.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def do_GET(self) -> None:
                self._send(False)

            def do_HEAD(self) -> None:
                self._send(True)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _tiff(path: Path, h: int = 40, w: int = 48, dtype: str = "uint8", values: np.ndarray | None = None) -> Path:
    a = values if values is not None else np.random.default_rng(0).integers(0, 255, (3, h, w)).astype(dtype)
    with rasterio.open(
        path, "w", driver="GTiff", width=a.shape[2], height=a.shape[1], count=a.shape[0], dtype=a.dtype
    ) as ds:
        ds.write(a)
    return path


def _vrt(path: Path, source: str, relative: bool = True, extra: str = "", h: int = 40, w: int = 48) -> Path:
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource>'
        f'<SourceFilename relativeToVRT="{int(relative)}">{source}</SourceFilename>'
        f"<SourceBand>{b}</SourceBand></SimpleSource>{extra}</VRTRasterBand>"
        for b in (1, 2, 3)
    )
    path.write_text(f'<VRTDataset rasterXSize="{w}" rasterYSize="{h}">{bands}</VRTDataset>')
    return path


EXT = ["--ext", "tif,vrt"]  # folders hold no .vrt by default (a mosaic would repeat its tiles)


@pytest.fixture()
def server(tmp_path):
    s = _Server(_tiff(tmp_path / "served.tif").read_bytes())
    yield s
    s.close()


def _hostile(folder: Path, server: _Server, outside: Path) -> dict[str, str]:
    """Hostile inputs in `folder` → the words each one's error line must hold."""
    folder.mkdir(parents=True, exist_ok=True)
    os.mkfifo(folder / "pipe.tif")  # a source only: discovery never offers a FIFO as an input
    (folder / "elsewhere.tif").symlink_to(_tiff(outside / "elsewhere.tif"))
    raw = (
        '<VRTDataset rasterXSize="64" rasterYSize="8"><VRTRasterBand dataType="Byte" band="1" '
        'subClass="VRTRawRasterBand"><SourceFilename relativetoVRT="0">/etc/passwd</SourceFilename>'
        "<ImageOffset>0</ImageOffset><PixelOffset>1</PixelOffset><LineOffset>64</LineOffset></VRTRasterBand>"
        "</VRTDataset>"
    )
    (folder / "passwd.vrt").write_text(raw)
    (folder / "wms.tif").write_text(
        f"<GDAL_WMS><Service name='TMS'><ServerUrl>{server.url}/wms/${{z}}/${{x}}/${{y}}.png</ServerUrl>"
        "</Service><DataWindow><UpperLeftX>0</UpperLeftX><UpperLeftY>0</UpperLeftY><LowerRightX>1</LowerRightX>"
        "<LowerRightY>1</LowerRightY><SizeX>256</SizeX><SizeY>256</SizeY></DataWindow></GDAL_WMS>"
    )
    _vrt(folder / "inner.vrt", f"/vsicurl/{server.url}/nested.tif", relative=False)
    python = "<PixelFunctionType>f</PixelFunctionType><PixelFunctionLanguage>Python</PixelFunctionLanguage>"
    (folder / "entities.vrt").write_text('<!DOCTYPE x [<!ENTITY a "aaaa">]><VRTDataset>&a;</VRTDataset>')
    cases = {
        _vrt(folder / "curl.tif", f"/vsicurl/{server.url}/x.tif", relative=False).name: "network or virtual path",
        _vrt(folder / "s3.vrt", "/vsis3/bucket/x.tif", relative=False).name: "network or virtual path",
        _vrt(folder / "http.vrt", f"{server.url}/x.tif", relative=False).name: "network or virtual path",
        _vrt(folder / "fifo.vrt", "pipe.tif").name: "not a regular file",
        _vrt(folder / "dotdot.vrt", f"../{outside.name}/elsewhere.tif").name: "outside the input's folder",
        _vrt(folder / "link.vrt", "elsewhere.tif").name: "outside the input's folder",
        _vrt(folder / "nested.vrt", "inner.vrt").name: "network or virtual path",
        _vrt(folder / "python.vrt", "ok.tif", extra=python).name: "Python pixel function",
        "passwd.vrt": "outside the input's folder",
        "wms.tif": "network or index dataset",
        "entities.vrt": "DTD or entities",
    }
    return cases


@pytest.mark.slow  # a CLI process over a dozen rasters
def test_hostile_vrts_fail_alone_and_nothing_reaches_the_network(tiny_convnext_dir, tmp_path, server):
    folder, outside = tmp_path / "in", tmp_path / "other"
    outside.mkdir()
    cases = _hostile(folder, server, outside)
    _tiff(folder / "ok.tif")
    _vrt(folder / "good.vrt", "ok.tif")  # a plain 8-bit VRT: read through GDAL, not Pillow
    with no_hang(120):
        r = subprocess.run(
            [sys.executable, "-m", "segcli", "predict", folder, "-o", tmp_path / "out", "-m", tiny_convnext_dir, *EXT],
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert server.requests == [], server.requests
    assert r.returncode == 1, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("segcli: error:")]
    for name, words in cases.items():
        mine = [e for e in errors if f"{name}:" in e or f"/{name}" in e]
        assert mine and words in mine[0], (name, errors)
    assert "Traceback" not in r.stderr
    good = json.loads((tmp_path / "out" / "good.json").read_text())
    ok = json.loads((tmp_path / "out" / "ok.json").read_text())
    assert good["classes"] == ok["classes"]  # the VRT is its source, pixel for pixel


def test_trust_vrt_lets_a_vrt_read_the_network(tmp_path, server):
    """The fence is what keeps the request from leaving: with --trust-vrt the same file reaches the server."""
    folder = tmp_path / "in"
    folder.mkdir()
    vrt = _vrt(folder / "curl.vrt", f"/vsicurl/{server.url}/served.tif", relative=False)
    with pytest.raises(ImageError, match="network or virtual path"):
        Raster(vrt)
    assert server.requests == []
    with no_hang(60):
        raster = Raster(vrt, RasterOptions(trust_vrt=True))
        rgb, _ = raster.read(0, 40)
        raster.close()
    assert server.requests and rgb.shape == (40, 48, 3)
    with rasterio.open(tmp_path / "served.tif") as ds:
        assert np.array_equal(rgb, ds.read().transpose(1, 2, 0))


@pytest.mark.parametrize("special", ["fifo", "zero"])
def test_special_files_are_refused_even_when_trusted(tmp_path, special):
    """A FIFO never answers, /dev/zero never ends (a 1 KB VRT declaring 20000² of it): not regular files."""
    if special == "fifo":
        os.mkfifo(tmp_path / "src.raw")
    else:
        (tmp_path / "src.raw").symlink_to("/dev/zero")
    with no_hang(30), pytest.raises(ImageError, match="not a regular file"):
        Raster(_vrt(tmp_path / "v.vrt", "src.raw", h=20000, w=20000), RasterOptions(trust_vrt=True))
    with no_hang(30), pytest.raises(ImageError, match="not a regular file"):
        Raster(tmp_path / "src.raw")  # named as the input itself (the API: no discovery before it)


def test_a_vrt_may_read_files_in_its_own_folder_and_below(tmp_path):
    (tmp_path / "tiles").mkdir()
    _tiff(tmp_path / "tiles" / "a.tif")
    inner = _vrt(tmp_path / "tiles" / "inner.vrt", "a.tif")
    raster = Raster(_vrt(tmp_path / "outer.vrt", f"tiles/{inner.name}"))
    rgb, _ = raster.read(0, 40)
    raster.close()
    with rasterio.open(tmp_path / "tiles" / "a.tif") as ds:
        assert np.array_equal(rgb, ds.read().transpose(1, 2, 0))


def test_float64_values_near_the_limit_scale_or_are_refused(tmp_path):
    big = np.full((1, 8, 8), 1e300)
    big[0, :, 4:] = 3e300
    raster = Raster(_tiff(tmp_path / "big.tif", values=big))
    rgb, _ = raster.read(0, 8)
    raster.close()
    assert rgb[:, :4].max() == 0 and rgb[:, 4:].min() == 255  # the 2nd/98th percentiles span 1e300..3e300
    both = np.full((1, 8, 8), -1.7e308)
    both[0, :, 4:] = 1.7e308
    with pytest.raises(ImageError, match="float64 can scale"):
        Raster(_tiff(tmp_path / "both.tif", values=both))
    span = np.full((1, 8, 8), -1.7e308)
    span[0, :, 4:] = 1.7e308
    raster = Raster(_tiff(tmp_path / "span.tif", values=span), RasterOptions(scale_range=(-1.0, 1.0)))
    rgb, _ = raster.read(0, 8)
    raster.close()
    assert rgb[:, :4].max() == 0 and rgb[:, 4:].min() == 255
