"""It learns: `segcli.train.fit` fine-tunes a small UPerNet-ConvNeXt on a generated dataset and prints the
validation mIoU at every validation (target ≥ 0.90 within the budget below).

    python benchmarks/train_converges.py                       # 300 images, 5 classes, 600 iterations
    python benchmarks/train_converges.py --iters 300 --images 120

Data: textured shapes (squares, discs, bars, triangles on a noisy ground; 5 classes; 96×128 JPEGs), 80 / 20
% train / val split (seeded). Model: UPerNet on a random ConvNeXt (depths 1-1-2-1, widths 16-40, head 32
channels: no pretrained weights exist here; its `hf` protocol at the data's 96×128, which is also the base
scale of the training's random resize), its classifier made for the 5 classes by `--classes`; the
ConvNeXt recipe (AdamW, stage-wise decay 0.9, warmup, poly) at lr 6e-3 (a random start: the recipe's 1e-4 is
for pretrained weights; 2e-3 left the two rarest classes unlearned at 600 iterations), batch 4, crop 64², mmseg's
augmentation. Validation: segcli's own metrics with the model's protocol (whole image, `hf` preset).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from machine import cpu_line

NAMES = ["ground", "square", "disc", "bar", "triangle"]
COLOURS = [(110, 110, 110), (200, 50, 40), (40, 170, 70), (50, 70, 200), (210, 190, 40)]


def sample(rng: np.random.Generator, h: int = 96, w: int = 128) -> tuple[np.ndarray, np.ndarray]:
    labels = np.zeros((h, w), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    for _ in range(int(rng.integers(2, 6))):
        k = int(rng.integers(1, 5))
        cy, cx, r = int(rng.integers(10, h - 10)), int(rng.integers(10, w - 10)), int(rng.integers(6, 18))
        if k == 1:
            m = (abs(yy - cy) < r) & (abs(xx - cx) < r)
        elif k == 2:
            m = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        elif k == 3:
            m = (abs(yy - cy) < 4) & (abs(xx - cx) < 2 * r)
        else:
            m = (yy - cy < r) & (yy - cy > -r) & (abs(xx - cx) < (yy - cy + r) / 2)
        labels[m] = k
    base = np.array(COLOURS, dtype=np.float32)[labels]
    texture = rng.normal(0, 18, (h, w, 3)) + 20 * np.sin(xx / rng.uniform(2, 6))[..., None]
    return np.clip(base + texture, 0, 255).astype(np.uint8), labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--iters", type=int, default=600)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--amp", default="auto")
    ap.add_argument("--lr", type=float, default=6e-3)
    ap.add_argument("--no-photometric", action="store_true")
    args = ap.parse_args()

    from helpers import randomize_, save_hf_dir, tiny_convnext

    from segcli.train.fit import Events, fit

    root = Path(tempfile.mkdtemp(prefix="segcli-converge-"))
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (root / "data" / sub).mkdir(parents=True)
    for i in range(args.images):
        image, labels = sample(rng)
        Image.fromarray(image).save(root / "data" / "images" / f"{i:04d}.jpg", quality=92)
        Image.fromarray(labels).save(root / "data" / "masks" / f"{i:04d}.png")
    classes = root / "classes.csv"
    classes.write_text("".join(f"{n},{r},{g},{b}\n" for n, (r, g, b) in zip(NAMES, COLOURS, strict=True)))
    model = save_hf_dir(randomize_(tiny_convnext(), seed=1), root / "start", processor=False)
    from transformers import SegformerImageProcessor

    SegformerImageProcessor(size={"height": 96, "width": 128}).save_pretrained(model)  # the data's own size

    print(f"# machine: {cpu_line()}")
    print(
        f"# {args.images} images (80/20 split), {args.iters} iterations, batch 4, crop 64², lr {args.lr}, amp {args.amp}"
    )
    print(f"{'iter':>6} {'loss':>8} {'val mIoU':>9} {'s':>7}")
    t0, last = time.perf_counter(), {"total": float("nan")}

    def logged(r: dict) -> None:
        nonlocal last
        if "total" in r:
            last = r
        else:
            print(
                f"{r['iter']:>6} {last['total']:>8.4f} {r['val_mIoU']:>9.4f} {time.perf_counter() - t0:>7.1f}",
                flush=True,
            )

    summary = fit(
        root / "data", str(model), root / "run", events=Events(logged=logged), classes=classes,
        val_split=0.2, iters=args.iters, batch=4, crop=(64, 64), lr=args.lr, workers=args.workers, amp=args.amp,
        photometric=not args.no_photometric,
        val_every=max(1, args.iters // 10),
    )  # fmt: skip
    print(
        json.dumps(
            {"best_val_mIoU": summary.best_miou, "model": str(summary.model), "seconds": time.perf_counter() - t0}
        )
    )


if __name__ == "__main__":
    main()
