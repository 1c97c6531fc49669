"""Pairs per second of `segcli evaluate` on synthetic data.

    python benchmarks/evaluate_speed.py                # 2000 pairs 512×683, 150 classes
    python benchmarks/evaluate_speed.py --pairs 200

Ground truth: blocky label maps (regions of 16-64 px, like annotations) with 5% ignore pixels, written as
8-bit index PNGs; predictions: the same maps with a share of the regions relabelled, written as palette
PNGs like `segcli predict` writes them. The timed part is what `segcli evaluate --pred --gt` runs: pairing
by name, decoding in threads, one int64 confusion matrix, the metrics. Generating the files is not timed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def label_map(rng: np.random.Generator, h: int, w: int, k: int) -> np.ndarray:
    cell = int(rng.integers(16, 65))
    small = rng.integers(0, k, (h // cell + 1, w // cell + 1))
    return np.kron(small, np.ones((cell, cell), dtype=np.int64))[:h, :w].astype(np.uint8)


def make(folder: Path, n: int, k: int) -> None:
    from segcli.io.outputs import atomic_write_bytes, label_png
    from segcli.loading.classes import known_set

    palette = known_set("ade20k").palette_array
    rng = np.random.default_rng(0)
    for i in range(n):
        gt = label_map(rng, 512, 683, k)
        pred = np.where(label_map(rng, 512, 683, 4) == 0, label_map(rng, 512, 683, k), gt)
        gt[rng.random(gt.shape) < 0.05] = 255
        (folder / "gt").mkdir(parents=True, exist_ok=True)
        Image.fromarray(gt).save(folder / "gt" / f"{i:05d}.png")
        atomic_write_bytes(folder / "pred" / f"{i:05d}.png", label_png(pred, palette))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    from segcli.evaluation import evaluate as ev

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        make(root, args.pairs, 150)
        print(f"generated {args.pairs} pairs 512x683 (150 classes) in {time.perf_counter() - t:.0f} s")
        t = time.perf_counter()
        pairing = ev.pair(root / "pred", root / "gt")
        result = ev.evaluate(pairing.pairs, ev.Settings(150, workers=args.workers))
        doc = ev.report(result, [str(i) for i in range(150)], ev.Settings(150), "nan", {})
        seconds = time.perf_counter() - t
        assert result.pairs == args.pairs and not result.failures
        print(
            f"segcli evaluate: {args.pairs / seconds:.0f} pairs/s ({seconds:.1f} s, {args.workers} threads), "
            f"mIoU {100 * doc['summary']['mIoU']:.2f}"
        )


if __name__ == "__main__":
    main()
