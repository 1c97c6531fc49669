"""How far from this machine's limit: the FLOPs a model computes and the machine's measured peaks.

    python benchmarks/roofline.py                       # ConvNeXt-T, Swin-T, PSPNet-R50-D8 at 512×512
    python benchmarks/roofline.py --models convnext     # one

For each model (the registry's real architectures, random weights): the FLOPs of one 512×512 forward in
segcli's form, counted from the graph (torch.utils.flop_counter: convolutions and matrix products, 2 per
multiply-add), and in transformers' form for the UPerNet families; the machine's measured peaks (fp32 GEMM
2048³, and a 3×3 convolution of the UPerNet head's fusion shape, 2048 → 512 channels; bf16 where the CPU
computes it natively); then the eager forward's achieved GFLOP/s over the whole network and over the
decode head alone (its convolutions are the head's shape), each as a fraction of the conv peak.
`benchmarks/backends.py --roofline` adds the achieved GFLOP/s of every backend to its table.
Target (issue "Speed II"): the default path ≥ 60 % of the measured conv peak on the head's convolutions.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of `fn` (2 per multiply-add of convolutions and matrix products)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        fn()
    return int(counter.get_total_flops())


def timed(fn: Callable[[], object], repeat: int = 5) -> float:
    """Median seconds of `repeat` calls after one warm-up."""
    with torch.inference_mode():
        fn()
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def peaks(bf16: bool) -> dict[str, float]:
    """GFLOP/s of an fp32 GEMM (2048³) and of the head's 3×3 conv (2048 → 512 at 64×64), and in bf16."""
    out = {}
    for dtype in (torch.float32, *((torch.bfloat16,) if bf16 else ())):
        name = "fp32" if dtype == torch.float32 else "bf16"
        a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
        out[f"gemm {name}"] = 2 * 2048**3 / timed(lambda a=a, b=b: a @ b) / 1e9
        conv = torch.nn.Conv2d(2048, 512, 3, padding=1, bias=False).to(dtype).eval()
        x = torch.randn(1, 2048, 64, 64, dtype=dtype)
        out[f"conv3x3 {name}"] = 2 * 2048 * 512 * 9 * 64 * 64 / timed(lambda c=conv, x=x: c(x), 3) / 1e9
    return out


def model_figures(family: str, folder: Path) -> dict[str, float]:
    from backends import make_model

    from segcli import Segmenter

    model_dir = make_model(family, folder)
    net = Segmenter.from_pretrained(model_dir).network
    x = torch.randn(1, 3, 512, 512)
    figures = {"segcli GFLOP": count_flops(lambda: net(x)) / 1e9}
    if family != "pspnet":
        from transformers import UperNetForSemanticSegmentation

        hf = UperNetForSemanticSegmentation.from_pretrained(model_dir).eval()
        figures["transformers GFLOP"] = count_flops(lambda: hf(pixel_values=x)) / 1e9
    with torch.inference_mode():
        feats = net.backbone(x)
    head = net.decode_head
    figures["head GFLOP"] = count_flops(lambda: head(feats)) / 1e9
    figures["forward s"] = timed(lambda: net(x), 3)
    figures["head s"] = timed(lambda: head(feats), 3)
    return figures


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="convnext,swin,pspnet")
    args = ap.parse_args()
    import tempfile

    from machine import cpu_line

    from segcli.backends.hardware import native_bf16

    print(f"{cpu_line()}; torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    peak = peaks(native_bf16(torch.device("cpu")))
    print("measured peaks: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peak.items()), flush=True)
    conv = peak["conv3x3 fp32"]
    tmp = Path(tempfile.mkdtemp(prefix="segcli-roofline-"))
    for family in args.models.split(","):
        f = model_figures(family, tmp / family)
        hf = f" (transformers' form {f['transformers GFLOP']:.1f}: ×{f['transformers GFLOP'] / f['segcli GFLOP']:.3f})"
        print(
            f"\n{family} at 512×512 (eager fp32): {f['segcli GFLOP']:.1f} GFLOP{hf if 'transformers GFLOP' in f else ''}"
        )
        whole = f["segcli GFLOP"] / f["forward s"]
        head = f["head GFLOP"] / f["head s"]
        print(f"  forward  {f['forward s']:6.3f} s  {whole:6.1f} GFLOP/s  {100 * whole / conv:5.1f} % of the conv peak")
        print(
            f"  head     {f['head s']:6.3f} s  {head:6.1f} GFLOP/s  {100 * head / conv:5.1f} % of the conv peak"
            f"  ({f['head GFLOP']:.1f} GFLOP; target ≥ 60 %)"
        )


if __name__ == "__main__":
    main()
