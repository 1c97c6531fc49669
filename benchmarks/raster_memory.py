"""Peak memory of `segcli predict` on a huge GeoTIFF read by windows (the [geo] extra).

    python benchmarks/raster_memory.py                 # 40000×40000 RGB, tiled + deflate, 8-class tiny model
    python benchmarks/raster_memory.py --size 10000    # quicker
    python benchmarks/raster_memory.py --size 20000 --vector    # + polygons (--save vector, GeoPackage)

Writes a synthetic tiled, compressed RGB GeoTIFF (blocky colours, EPSG:32633, a nodata band along the left
edge) and a tiny random UperNet-ConvNeXt with `--classes` classes (what a land-cover model has), then runs
`segcli predict RASTER -o OUT --resize none --mode slide --save json,geotiff` in a child process and
prints its wall time, windows per second and peak RSS (the child's ru_maxrss) next to what decoding the
raster alone would take (H×W×3 bytes). The rasters' windows hold [classes × window rows × width] sums:
memory grows with the width and the class count, not the area.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def write_raster(path: Path, size: int, height: int, rows: int = 1024) -> None:
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, (height // 256 + 1, size // 256 + 1, 3), dtype=np.uint8)
    profile = dict(driver="GTiff", width=size, height=height, count=3, dtype="uint8", crs="EPSG:32633", nodata=0)
    profile.update(transform=from_origin(400000, 5200000, 0.3, 0.3), tiled=True, blockxsize=512, blockysize=512)
    profile.update(compress="deflate", BIGTIFF="YES", photometric="RGB")
    with rasterio.open(path, "w", **profile) as ds:
        for y in range(0, height, rows):
            n = min(rows, height - y)
            ys = (np.arange(y, y + n) // 256)[:, None]
            band = colours[ys, (np.arange(size) // 256)[None, :]]  # [n, size, 3]
            band[:, :300] = 0  # nodata along the left edge
            ds.write(np.ascontiguousarray(band.transpose(2, 0, 1)), window=rasterio.windows.Window(0, y, size, n))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=40000)
    ap.add_argument("--height", type=int, default=None, help="rows (default: --size); memory follows the width")
    ap.add_argument("--classes", type=int, default=8)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--vector", action="store_true", help="also --save vector --vector-format gpkg (streamed)")
    args = ap.parse_args()

    from helpers import randomize_, save_hf_dir, tiny_convnext
    from machine import cpu_line

    tmp = Path(tempfile.mkdtemp(prefix="segcli-raster-bench-"))
    model = randomize_(tiny_convnext(num_labels=args.classes), seed=5)
    save_hf_dir(model, tmp / "model")
    raster = tmp / "big.tif"
    t = time.perf_counter()
    height = args.height or args.size
    write_raster(raster, args.size, height)
    print(f"wrote {raster} ({raster.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t:.0f} s", flush=True)

    cmd = [sys.executable, "-m", "segcli", "predict", str(raster), "-o", str(tmp / "out"), "-m", str(tmp / "model")]
    save = "json,geotiff,vector" if args.vector else "json,geotiff"
    cmd += ["--resize", "none", "--mode", "slide", "--save", save, "--threads", str(args.threads), "-q"]
    cmd += ["--vector-format", "gpkg"] if args.vector else []
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux: KiB
    doc = json.loads((tmp / "out" / "big.json").read_text())
    windows, skipped = doc["raster"]["windows"], doc["raster"]["windows_skipped"]
    print(f"\n{cpu_line()}; torch threads {args.threads}")
    print(f"raster {args.size}×{height} RGB uint8 (W×H), {args.classes} classes, crop 512 stride 341")
    print(f"  decoding it whole would take     {args.size * height * 3 / 2**30:7.2f} GiB")
    print(f"  segcli peak RSS (whole process)  {peak / 2**30:7.2f} GiB   (target < 1.5 GiB)")
    print(
        f"  wall {wall:.0f} s, {windows} windows ({skipped} skipped: nodata), {(windows - skipped) / wall:.2f} windows/s"
    )
    print(f"  output {tmp / 'out' / 'big.tif'} ({(tmp / 'out' / 'big.tif').stat().st_size / 2**20:.0f} MiB)")
    if args.vector:
        import pyogrio

        gpkg = tmp / "out" / "big.gpkg"
        info = pyogrio.read_info(gpkg)
        print(f"  polygons {gpkg} ({gpkg.stat().st_size / 2**20:.0f} MiB): {info['features']} features, {info['crs']}")


if __name__ == "__main__":
    main()
