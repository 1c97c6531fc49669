"""How long an export takes per model, and what an estimate from the network's size predicts: one table.

    python benchmarks/export_time.py                   # tiny ConvNeXt, tiny PSPNet, UperNet-ConvNeXt-T, PSPNet-R50
    python benchmarks/export_time.py --formats onnx --size 256

Each network is built from its registry configuration with random weights (no download) or from the tests'
tiny configurations; each format is exported once (static, then `--dynamic` for ONNX) into a temporary file,
timed by wall clock, with the estimate `segcli export` prints (`segcli.backends.export.estimate_seconds`)
beside it. torch.export's tracing and decompositions and the ONNX optimizer run per graph node, so the time
follows the number of modules far more than the parameter count or the input size.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))


def _networks(names: list[str]):  # type: ignore[no-untyped-def]
    from segcli.loading.registry import load_registry
    from segcli.model import Segmentor, SegmentorConfig
    from segcli.model.backbones import ConvNeXtConfig, ResNetConfig
    from segcli.model.heads.fcn import FCNHeadConfig
    from segcli.model.heads.psp import PSPHeadConfig
    from segcli.model.heads.uper import UPerHeadConfig

    tiny = {
        "tiny-convnext": SegmentorConfig(
            ConvNeXtConfig((1, 1, 2, 1), (16, 24, 32, 40)),
            UPerHeadConfig((16, 24, 32, 40), 150, channels=32),
            FCNHeadConfig(32, 150, channels=16),
        ),
        "tiny-pspnet": SegmentorConfig(
            ResNetConfig(50, (1, 2, 1, 1), (1, 1, 2, 4), blocks=(1, 1, 1, 1)),
            PSPHeadConfig(2048, 19, channels=32, align_corners=True),
            FCNHeadConfig(1024, 19, channels=16),
        ),
    }
    registry = load_registry()
    for name in names:
        cfg = tiny[name] if name in tiny else registry[name].network
        yield name, Segmentor(cfg).eval()


def main() -> None:
    from machine import cpu_line

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--models", nargs="+", default=["tiny-convnext", "tiny-pspnet", "upernet-convnext-tiny", "pspnet-r50-d8-ade20k"]
    )
    p.add_argument("--formats", nargs="+", default=["onnx", "onnx-dynamic", "torchscript"])
    p.add_argument("--size", type=int, default=256)
    args = p.parse_args()

    from segcli.backends import export as ex

    print(f"machine: {cpu_line()}")
    print(f"{'model':24} {'modules':>7} {'params':>8} {'format':13} {'seconds':>8} {'estimate':>8}")
    for name, net in _networks(args.models):
        modules = sum(1 for _ in net.modules())
        params = sum(p.numel() for p in net.parameters())
        for fmt in args.formats:
            dynamic = fmt == "onnx-dynamic"
            opts = ex.ExportOptions("onnx" if dynamic else fmt, (args.size, args.size), dynamic)
            with tempfile.TemporaryDirectory() as d:
                start = time.perf_counter()
                (ex.export_onnx if opts.fmt == "onnx" else ex.export_torchscript)(net, opts, Path(d) / "m")
                took = time.perf_counter() - start
            guess = ex.estimate_seconds(net, opts.fmt, dynamic)
            print(f"{name:24} {modules:7d} {params / 1e6:7.1f}M {fmt:13} {took:8.1f} {guess:8.0f}", flush=True)


if __name__ == "__main__":
    main()
