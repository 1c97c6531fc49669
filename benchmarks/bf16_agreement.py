"""Label agreement of bfloat16 with float32 per model family, on real photos: what `--dtype auto` relies on.

    python benchmarks/bf16_agreement.py                                   # ../shared's ADE20K sample images
    python benchmarks/bf16_agreement.py --images DIR --size 512

For each family — UPerNet ConvNeXt-T, UPerNet Swin-T, PSPNet ResNet-50-D8 (the registry's architectures,
random weights drawn as the parity tests draw them) — every image runs through the model's registry protocol
in float32 and in bfloat16, and the share of pixels with the same label is printed, with the time of each
(bfloat16 is emulated, and slow, on CPUs without AVX512-BF16 / AMX: the agreement is the same). `auto`
picks bfloat16 only for families at ≥ 99.5 % (`segcli.hardware.BF16_FAMILIES`). Random weights are a
stand-in for trained ones (no download here): real checkpoints can be checked with `--model NAME`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

FAMILIES = {"convnext": "upernet-convnext-tiny", "swin": "upernet-swin-tiny", "resnet": "pspnet-r50-d8-ade20k"}
SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "ade20k-val-sample" / "images"


def random_segmenter(name: str, dtype: torch.dtype):
    from helpers import randomize_

    from segcli import Segmenter
    from segcli.loading.registry import load_registry
    from segcli.model import Segmentor

    spec = load_registry()[name]
    torch.manual_seed(0)
    model = randomize_(Segmentor(spec.network), seed=7).eval().to(dtype)
    return Segmenter(model, spec.info())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=Path, default=SAMPLE)
    ap.add_argument("--model", action="append", help="registry names with downloaded weights (else random)")
    args = ap.parse_args()

    from machine import cpu_line

    from segcli import Segmenter
    from segcli.io.images import load_image

    paths = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    images = [load_image(p) for p in paths]
    print(f"{cpu_line()}; torch threads {torch.get_num_threads()}; {len(images)} images from {args.images}")
    names = {n: n for n in args.model} if args.model else FAMILIES
    for family, name in names.items():
        if args.model:
            segs = [Segmenter.from_pretrained(name, dtype=dt) for dt in ("float32", "bfloat16")]
        else:
            segs = [random_segmenter(name, dt) for dt in (torch.float32, torch.bfloat16)]
        same = total = 0
        seconds = [0.0, 0.0]
        for image in images:
            labels = []
            for i, seg in enumerate(segs):
                t = time.perf_counter()
                labels.append(seg.predict(image))
                seconds[i] += time.perf_counter() - t
            same += int((labels[0] == labels[1]).sum())
            total += labels[0].size
        print(
            f"  {family:<9} {name:<24} preset {segs[0].info.default_preset:<6} agreement {same / total:.5f}  "
            f"fp32 {seconds[0]:6.1f} s  bf16 {seconds[1]:6.1f} s"
        )


if __name__ == "__main__":
    main()
