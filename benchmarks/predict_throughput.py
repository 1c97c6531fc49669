"""A photo collection end to end: `segcli predict` with its default settings vs the transformers loop.

    python benchmarks/predict_throughput.py                 # 64 photos 512×683, 2 interleaved rounds
    python benchmarks/predict_throughput.py --images 16 --rounds 1

Model: a random-weight UPerNet ConvNeXt-T (the real upernet-convnext-tiny architecture, 150 classes) saved
with transformers' save_pretrained; images: synthetic 512×683 JPEGs. Both use the `hf` protocol (resize to
512×512, logits resized back) and write one palette PNG per image:

  transformers  Image.open → SegformerImageProcessor → UperNetForSemanticSegmentation →
                post_process_semantic_segmentation → palette PNG, one image after the other (in this process,
                the model loaded before the clock starts)
  segcli        `segcli predict IMAGES -o OUT -m MODEL --preset hf` in its own process, every other setting
                its default (--dtype auto, --backend auto, --save json: a JSON per image too); the time is
                summary.json's `seconds` (decode → infer → encode → write, model loading excluded), the
                process's wall time beside it

Before the rounds, one `segcli predict --backend-measure again` over 8 of the images in a fresh cache makes
the backend calibration `--backend auto` caches (a one-time cost per machine and model, printed; a first run
measures only when that costs at most 10 % of it, so the rounds show the cached choice). Rounds interleave
the two sides; medians, the ratio, label agreement and summary.json's per-stage breakdown are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def make_model(path: Path) -> None:
    from helpers import hf_convnext, randomize_

    torch.manual_seed(0)
    randomize_(hf_convnext((3, 3, 9, 3), (96, 192, 384, 768), aux_in=384)).save_pretrained(
        path, safe_serialization=True
    )
    from transformers import SegformerImageProcessor

    SegformerImageProcessor().save_pretrained(path)


def make_images(folder: Path, n: int) -> list[Path]:
    from helpers import random_image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"img{i:03d}.jpg"
        Image.fromarray(random_image(512, 683, seed=i)).save(p, quality=92)
        paths.append(p)
    return paths


def run_transformers(processor: Any, model: Any, paths: list[Path], out: Path) -> float:
    from segcli.loading.classes import known_set

    palette = known_set("ade20k").palette_array
    flat = np.zeros((256, 3), np.uint8)
    flat[:150] = palette
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    with torch.inference_mode():
        for p in paths:
            image = Image.open(p).convert("RGB")
            inputs = processor(images=image, return_tensors="pt")
            outputs = model(pixel_values=inputs.pixel_values)
            seg = processor.post_process_semantic_segmentation(outputs, target_sizes=[image.size[::-1]])[0]
            im = Image.fromarray(seg.numpy().astype(np.uint8), mode="P")
            im.putpalette(flat.tobytes())
            im.save(out / f"{p.stem}.png")
    return time.perf_counter() - t


def run_segcli(model_dir: Path, images: Path, out: Path, *extra: str) -> tuple[float, float, dict]:
    """(summary seconds, wall seconds, summary.json) of the CLI with its defaults and --preset hf."""
    cmd = [sys.executable, "-m", "segcli", "predict", str(images), "-o", str(out), "-m", str(model_dir)]
    t = time.perf_counter()
    r = subprocess.run([*cmd, "--preset", "hf", "-q", *extra], capture_output=True, text=True)
    wall = time.perf_counter() - t
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    return summary["seconds"], wall, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    from machine import cpu_line

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["SEGCLI_CACHE"] = str(tmp / "cache")  # the calibration below is this run's
        make_model(tmp / "model")
        paths = make_images(tmp / "images", args.images)
        print(f"{cpu_line()}; torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
        print(f"{args.images} photos 512x683, random-weight UPerNet ConvNeXt-T, hf protocol", flush=True)
        first = tmp / "first"
        first.mkdir()
        for p in paths[:8]:
            (first / p.name).symlink_to(p)
        # --backend-measure again: measured whatever the run's size (auto would not spend ~a minute on 8
        # images), as a machine's first large run, or an earlier run, leaves it in the cache
        _, wall, summary = run_segcli(tmp / "model", first, tmp / "out-first", "--backend-measure", "again")
        b = summary["backend"]
        print(f"one-time calibration run (8 images, {wall:.0f} s wall): {b['backend']} ({b['reason']})", flush=True)

        from transformers import SegformerImageProcessor, UperNetForSemanticSegmentation

        processor = SegformerImageProcessor.from_pretrained(tmp / "model")
        net = UperNetForSemanticSegmentation.from_pretrained(tmp / "model").eval()
        t_hf, t_seg, walls = [], [], []
        for r in range(args.rounds):
            t_hf.append(run_transformers(processor, net, paths, tmp / f"out-hf{r}"))
            seconds, wall, summary = run_segcli(tmp / "model", tmp / "images", tmp / f"out-segcli{r}")
            t_seg.append(seconds)
            walls.append(wall)
            print(
                f"round {r + 1}: transformers {t_hf[-1]:.1f} s, segcli {seconds:.1f} s ({wall:.1f} s wall)", flush=True
            )
        hf, seg = statistics.median(t_hf), statistics.median(t_seg)
        print(f"transformers loop: {args.images / hf:.3f} images/s ({hf:.1f} s)")
        print(
            f"segcli predict:    {args.images / seg:.3f} images/s ({seg:.1f} s; {statistics.median(walls):.1f} s wall)"
        )
        agree = np.mean(
            [
                (
                    np.asarray(Image.open(tmp / "out-hf0" / f"{p.stem}.png"))
                    == np.asarray(Image.open(tmp / "out-segcli0" / f"{p.stem}.png"))
                ).mean()
                for p in paths
            ]
        )
        print(f"ratio segcli / transformers: {hf / seg:.2f}x   (label agreement {agree:.5f}; target ≥ 2x)")
        inf = summary["inference"]
        print(f"segcli ran: backend {inf['backend']}, dtype {inf['dtype']}; where the time went (summary.json):")
        for stage, t in summary["timings"].items():
            print(f"  {stage:<12} {t['seconds']:7.1f} s  {t['share']:6.1%}  {t['per_image']:.3f} s/image")


if __name__ == "__main__":
    main()
