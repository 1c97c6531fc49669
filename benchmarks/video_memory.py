"""Peak memory and speed of `segcli predict` on videos of different lengths (the [video] extra).

    python benchmarks/video_memory.py                        # 640×360 H.264, 150 and 600 frames
    python benchmarks/video_memory.py --frames 100,400 --size 1280x720

Encodes synthetic H.264 videos (moving textured shapes, 30 fps) with PyAV and a tiny random UperNet-ConvNeXt,
then runs `segcli predict VIDEO -o OUT --resize none --save json` in a child process per video (fresh
processes, interleaved with a run on the same frames as PNG files) and prints wall time, frames per second
and peak RSS (the child's ru_maxrss). Frames are decoded ahead a few at a time: the peak should not grow with
the video's length, and frames/s should be close to the PNG run's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def encode(path: Path, frames: int, w: int, h: int) -> None:
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    base = np.kron(rng.integers(0, 255, (9, 16, 3), dtype=np.uint8), np.ones((h // 9 + 1, w // 16 + 1, 1), np.uint8))
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            image = np.ascontiguousarray(np.roll(base, 4 * i, axis=1)[:h, :w])
            for p in s.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def pngs(video: Path, folder: Path) -> None:
    import av
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    with av.open(str(video)) as c:
        for i, f in enumerate(c.decode(video=0)):
            Image.fromarray(f.to_ndarray(format="rgb24")).save(folder / f"{i:06d}.png")


def run(inputs: Path, out: Path, model: Path, threads: int) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of one `segcli predict` in a fresh child (its own ru_maxrss)."""
    code = (
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    cmd = [sys.executable, "-m", "segcli", "predict", str(inputs), "-o", str(out), "-m", str(model)]
    cmd += ["--resize", "none", "--save", "json", "--threads", str(threads), "--batch-size", "4", "-q", "--overwrite"]
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *cmd], check=True, capture_output=True, text=True)
    return time.perf_counter() - t, int(done.stdout.split()[-1]) * 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", default="150,600", help="comma list of video lengths")
    ap.add_argument("--size", default="640x360", help="W×H of the frames")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()

    from helpers import randomize_, save_hf_dir, tiny_convnext
    from machine import cpu_line

    w, h = (int(v) for v in args.size.lower().split("x"))
    tmp = Path(tempfile.mkdtemp(prefix="segcli-video-bench-"))
    save_hf_dir(randomize_(tiny_convnext(), seed=5), tmp / "model")
    lengths = [int(n) for n in args.frames.split(",")]
    for n in lengths:
        encode(tmp / f"v{n}.mp4", n, w, h)
        pngs(tmp / f"v{n}.mp4", tmp / f"png{n}")
    times: dict[tuple[str, int], list[float]] = {}
    peaks: dict[tuple[str, int], int] = {}
    for _ in range(args.repeats):  # interleaved: video, PNGs, next length, …
        for n in lengths:
            for kind, inputs in (("video", tmp / f"v{n}.mp4"), ("png", tmp / f"png{n}")):
                wall, peak = run(inputs, tmp / f"out-{kind}{n}", tmp / "model", args.threads)
                times.setdefault((kind, n), []).append(wall)
                peaks[(kind, n)] = max(peaks.get((kind, n), 0), peak)
    print(f"\n{cpu_line()}; torch threads {args.threads}")
    print(f"tiny UperNet-ConvNeXt, --resize none, --batch-size 4, {w}×{h} frames; medians of {args.repeats} runs")
    print(f"{'input':>18} {'frames':>7} {'wall s':>8} {'frames/s':>9} {'peak RSS':>10}")
    for n in lengths:
        for kind in ("video", "png"):
            wall = statistics.median(times[(kind, n)])
            name = f"v{n}.mp4 (H.264)" if kind == "video" else f"{n} PNG files"
            print(f"{name:>18} {n:>7} {wall:>8.1f} {n / wall:>9.2f} {peaks[(kind, n)] / 2**30:>8.2f} GiB")


if __name__ == "__main__":
    main()
