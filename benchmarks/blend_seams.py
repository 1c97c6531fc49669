"""Seams of sliding-window inference: `--blend flat` (mmseg's mean) vs `gaussian` vs `hann` on a large
aerial-like mosaic, measured where windows meet and where they are central.

    python benchmarks/blend_seams.py                 # trains (or reuses) the shapes model, then measures
    python benchmarks/blend_seams.py --rounds 3 --crop 64 --stride 48

The model: the small UPerNet-ConvNeXt of `train_converges.py`, fine-tuned on its generated shapes (300
images, 300 iterations; cached in ~/.cache/segcli-bench/) so that its decisions are real, not a random
network's near-ties. The image: 8 × 12 of those scenes (768 × 1536) with their labels. Per blend: label
error against the ground truth and disagreement with the whole-image prediction (the same network with all
the context: what windowing alone changes), each on *seam* pixels (within 4 px of an inner window edge)
and *centre* pixels (at least crop/8 from every window edge), mIoU, and the median seconds of the rounds
(interleaved).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from machine import cpu_line
from train_converges import COLOURS, NAMES, sample

CACHE = Path.home() / ".cache" / "segcli-bench" / "shapes-model"


def trained_model() -> Path:
    """The shapes model, trained once (about a minute on 2 cores) and kept."""
    if (CACHE / "model" / "config.json").is_file():
        return CACHE / "model"
    from helpers import randomize_, save_hf_dir, tiny_convnext
    from transformers import SegformerImageProcessor

    from segcli.train.fit import fit

    rng = np.random.default_rng(0)
    data = CACHE / "data"
    for sub in ("images", "masks"):
        (data / sub).mkdir(parents=True, exist_ok=True)
    for i in range(300):
        image, labels = sample(rng)
        Image.fromarray(image).save(data / "images" / f"{i:04d}.jpg", quality=92)
        Image.fromarray(labels).save(data / "masks" / f"{i:04d}.png")
    classes = CACHE / "classes.csv"
    classes.write_text("".join(f"{n},{r},{g},{b}\n" for n, (r, g, b) in zip(NAMES, COLOURS, strict=True)))
    start = save_hf_dir(randomize_(tiny_convnext(), seed=1), CACHE / "start", processor=False)
    SegformerImageProcessor(size={"height": 96, "width": 128}).save_pretrained(start)
    fit(data, str(start), CACHE / "run", classes=classes, iters=300, batch=4, crop=(64, 64), lr=6e-3, workers=1,
        resume=(CACHE / "run").exists())  # fmt: skip
    (CACHE / "run" / "model").rename(CACHE / "model")
    return CACHE / "model"


def mosaic(rows: int = 8, cols: int = 12, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    tiles = [[sample(rng) for _ in range(cols)] for _ in range(rows)]
    image = np.concatenate([np.concatenate([t[0] for t in row], axis=1) for row in tiles], axis=0)
    labels = np.concatenate([np.concatenate([t[1] for t in row], axis=1) for row in tiles], axis=0)
    return image, labels


def regions(h: int, w: int, crop: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """(seam, centre) masks [H, W] of the slide grid (segcli.engine.slide.grid)."""
    from segcli.engine.slide import spans

    def edge_distance(size: int) -> np.ndarray:
        edges = sorted({e for a, b in spans(size, crop, stride) for e in (a, b)} - {0, size})
        pos = np.arange(size)[:, None] + 0.5
        return np.abs(pos - np.asarray(edges, dtype=np.float64)[None, :]).min(1) if edges else np.full(size, 1e9)

    dy, dx = edge_distance(h), edge_distance(w)
    near = np.minimum(dy[:, None], dx[None, :])
    return near <= 4, near >= crop / 8


def miou(pred: np.ndarray, gt: np.ndarray, k: int) -> float:
    ious = []
    for c in range(k):
        union = ((pred == c) | (gt == c)).sum()
        if union:
            ious.append(((pred == c) & (gt == c)).sum() / union)
    return float(np.mean(ious))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--crop", type=int, default=96)
    ap.add_argument("--stride", type=int, default=64)
    args = ap.parse_args()

    from segcli import Segmenter

    seg = Segmenter.from_pretrained(trained_model())
    image, gt = mosaic()
    h, w = gt.shape
    seam, centre = regions(h, w, args.crop, args.stride)
    whole = seg.predict(image, "hf", resize="none")
    slide = dict(resize="none", mode="slide", crop=args.crop, stride=args.stride)
    blends = ("flat", "gaussian", "hann")
    times: dict[str, list[float]] = {b: [] for b in blends}
    labels: dict[str, np.ndarray] = {}
    for _ in range(args.rounds):
        for b in blends:
            t = time.perf_counter()
            labels[b] = seg.predict(image, "hf", blend=b, **slide)
            times[b].append(time.perf_counter() - t)
    print(f"# machine: {cpu_line()}")
    print(f"# image {h}x{w}, crop {args.crop}, stride {args.stride}; seam px {seam.sum()}, centre px {centre.sum()}")
    print(f"# whole-image prediction: error {100 * (whole != gt).mean():.2f} %, mIoU {miou(whole, gt, 5):.4f}")
    print("| blend | error seam % | error centre % | ≠ whole seam % | ≠ whole centre % | mIoU | s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for b in blends:
        p = labels[b]
        print(
            f"| {b} | {100 * (p != gt)[seam].mean():.2f} | {100 * (p != gt)[centre].mean():.2f} | "
            f"{100 * (p != whole)[seam].mean():.2f} | {100 * (p != whole)[centre].mean():.2f} | "
            f"{miou(p, gt, 5):.4f} | {statistics.median(times[b]):.2f} |"
        )


if __name__ == "__main__":
    main()
