"""Images per second of `segcli predict` vs the straightforward transformers loop, on the same machine.

    python benchmarks/predict_throughput.py              # 32 images 512×683, float32
    python benchmarks/predict_throughput.py --images 8 --dtype bfloat16

Model: a random-weight UPerNet ConvNeXt-T (the real upernet-convnext-tiny architecture, 150 classes) saved
with transformers' save_pretrained; images: synthetic 512×683 JPEGs. Both sides use the `hf` protocol
(resize to 512×512, logits resized back) and write one palette PNG per image:

  transformers  Image.open → SegformerImageProcessor → UperNetForSemanticSegmentation →
                post_process_semantic_segmentation → palette PNG, one image after the other
  segcli        batch.run (what `segcli predict DIR --preset hf --save none` runs)

Model loading is excluded from both timings. Needs the test extra (transformers).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


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


def run_transformers(model_dir: Path, paths: list[Path], out: Path, dtype: torch.dtype) -> float:
    from transformers import SegformerImageProcessor, UperNetForSemanticSegmentation

    from segcli.classes import known_set

    processor = SegformerImageProcessor.from_pretrained(model_dir)
    model = UperNetForSemanticSegmentation.from_pretrained(model_dir, dtype=dtype).eval()
    palette = known_set("ade20k").palette_array
    flat = np.zeros((256, 3), np.uint8)
    flat[:150] = palette
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    with torch.inference_mode():
        for p in paths:
            image = Image.open(p).convert("RGB")
            inputs = processor(images=image, return_tensors="pt")
            outputs = model(pixel_values=inputs.pixel_values.to(dtype))
            outputs.logits = outputs.logits.float()
            seg = processor.post_process_semantic_segmentation(outputs, target_sizes=[image.size[::-1]])[0]
            im = Image.fromarray(seg.numpy().astype(np.uint8), mode="P")
            im.putpalette(flat.tobytes())
            im.save(out / f"{p.stem}.png")
    return time.perf_counter() - t


def run_segcli(model_dir: Path, paths: list[Path], out: Path, dtype: str, batch_size: int) -> float:
    from segcli import Segmenter, batch
    from segcli.inputs import discover

    seg = Segmenter.from_pretrained(model_dir, dtype=dtype)
    params = seg.params("hf")
    items = discover([str(p) for p in paths]).items
    opts = batch.Options(out, frozenset(), batch_size=batch_size)
    t = time.perf_counter()
    result = batch.run(seg, items, params, opts)
    assert result.done == len(paths), result.failures
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--batch-size", type=int, default=1, help="segcli --batch-size")
    args = ap.parse_args()
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_model(tmp / "model")
        paths = make_images(tmp / "images", args.images)
        print(
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.images} images 512x683, "
            f"{args.dtype}, random-weight UPerNet ConvNeXt-T"
        )
        t_hf = run_transformers(tmp / "model", paths, tmp / "out-hf", dtype)
        print(f"transformers loop: {args.images / t_hf:.3f} images/s ({t_hf:.1f} s)", flush=True)
        t_seg = run_segcli(tmp / "model", paths, tmp / "out-segcli", args.dtype, args.batch_size)
        print(f"segcli predict:    {args.images / t_seg:.3f} images/s ({t_seg:.1f} s)")
        agree = np.mean(
            [
                (
                    np.asarray(Image.open(tmp / "out-hf" / f"{p.stem}.png"))
                    == np.asarray(Image.open(tmp / "out-segcli" / f"{p.stem}.png"))
                ).mean()
                for p in paths
            ]
        )
        print(f"ratio segcli / transformers: {t_hf / t_seg:.2f}x   (label agreement {agree:.5f})")


if __name__ == "__main__":
    main()
