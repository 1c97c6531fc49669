"""Where eager PyTorch loses time on a CPU, and what each change to the eager path gains: one table.

    python benchmarks/eager_gap.py                       # ConvNeXt-T, Swin-T, PSPNet-R50-D8; 9 rounds
    python benchmarks/eager_gap.py --models pspnet --rounds 15 --profile

Every variant is the same network (random weights drawn as the parity tests draw them, real sizes) in one
process, one [1, 3, 512, 512] view per call (an `hf` view, a `slide` window); rounds interleave the variants
so machine noise spreads over all of them; medians, ratios to `base`, and the largest logit difference and
label agreement with `base` are printed. Variants:

  base        the network as loaded (`Segmenter.from_pretrained`, no backend chosen)
  fold        BatchNorm folded into the convolution before it (`segcli.model.fold`; what `use_backend` does)
  ln-permute  ConvNeXt's channels-first LayerNorm as a permute → layer_norm → permute (the former form)
  ln-stats    the same LayerNorm as mean / variance along the channels (no permute)
  nhwc        the network and its input in channels-last memory format (oneDNN's native layout)

`--profile` prints torch.profiler's top operators of `base` (self CPU time).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))


def _ln_permute(self, x):  # type: ignore[no-untyped-def]
    import torch.nn.functional as F

    y = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
    return y.permute(0, 3, 1, 2)


def _ln_stats(self, x):  # type: ignore[no-untyped-def]
    import torch

    u = x.mean(1, keepdim=True)
    d = x - u
    v = d.pow(2).mean(1, keepdim=True)
    return torch.addcmul(self.bias[:, None, None], self.weight[:, None, None], d * torch.rsqrt(v + self.eps))


def variants(net, family: str) -> dict:  # type: ignore[no-untyped-def]
    import torch

    from segcli.model.fold import fold_batchnorm
    from segcli.model.layers import LayerNorm2d

    out = {"base": net}
    folded = copy.deepcopy(net)
    if fold_batchnorm(folded):
        out["fold"] = folded
    if family == "convnext":
        for name, fn in (("ln-permute", _ln_permute), ("ln-stats", _ln_stats)):
            m = copy.deepcopy(net)
            for mod in m.modules():
                if isinstance(mod, LayerNorm2d):
                    mod.forward = types.MethodType(fn, mod)
            out[name] = m
    if family == "pspnet":
        out["nhwc"] = copy.deepcopy(net).to(memory_format=torch.channels_last)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="convnext,swin,pspnet")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()

    import torch
    from backends import make_model
    from machine import cpu_line

    from segcli import Segmenter

    tmp = Path(tempfile.mkdtemp(prefix="segcli-eager-gap-"))
    print(f"{cpu_line()}; torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    x = torch.randn((1, 3, 512, 512), generator=torch.Generator().manual_seed(0))
    for family in args.models.split(","):
        net = Segmenter.from_pretrained(str(make_model(family, tmp / family))).network
        models = variants(net, family)
        times: dict[str, list[float]] = {name: [] for name in models}
        with torch.inference_mode():
            ref = net(x)
            outs = {}
            for name, m in models.items():
                xi = x.to(memory_format=torch.channels_last) if name == "nhwc" else x
                outs[name] = m(xi)  # warm-up
            for _ in range(args.rounds):
                for name, m in models.items():
                    xi = x.to(memory_format=torch.channels_last) if name == "nhwc" else x
                    start = time.perf_counter()
                    m(xi)
                    times[name].append(time.perf_counter() - start)
        base = statistics.median(times["base"])
        print(f"\n{family}: 1×3×512×512, median of {args.rounds} interleaved rounds")
        for name, t in times.items():
            med = statistics.median(t)
            diff = float((outs[name] - ref).abs().max())
            agree = float((outs[name].argmax(1) == ref.argmax(1)).float().mean())
            print(f"  {name:<11} {med:6.3f} s  ×{base / med:5.3f} base  max |Δlogit| {diff:.2e}  labels {agree:.5f}")
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
                net(x)
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
