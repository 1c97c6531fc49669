"""int8 against float32 on this CPU: `segcli quantize`'s QDQ model run by onnxruntime (what `predict -m
FILE.onnx` runs) and by OpenVINO, next to eager float32 and the float32 ONNX export; seconds per image and
the share of pixels labelled as eager float32 labels them.

    python benchmarks/int8.py                        # convnext and pspnet, hf (512×512), 8 images, 3 rounds
    python benchmarks/int8.py --models convnext --images 4 --calib 16

Models: the registry's real architectures with random weights (benchmarks/backends.py's `make_model`);
their logits are nearly tied, so the agreement printed here is a floor, not what trained weights keep
(judge int8 on trained models with `segcli quantize --gt`). Calibration: `--calib` synthetic photos;
the timed images are others. Rounds interleave the runtimes; medians are printed with the ratio to eager.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))


def _openvino(path: Path):
    import openvino as ov
    import torch

    cfg = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": torch.get_num_threads()}
    compiled = ov.Core().compile_model(str(path), "CPU", {**cfg, "PERFORMANCE_HINT": "LATENCY"})
    return lambda x: np.array(compiled.create_infer_request().infer([x])[compiled.output(0)])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="convnext,pspnet")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--calib", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import torch
    from machine import cpu_line
    from predict_throughput import make_images

    tmp = Path(tempfile.mkdtemp(prefix="segcli-int8-"))
    calib = make_images(tmp / "calib", args.calib)
    images = make_images(tmp / "images", args.images + args.calib)[args.calib :]  # others than the calibration's
    print(f"{cpu_line()}; torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    for family in args.models.split(","):
        _family(family, tmp, calib, images, args.rounds)


def _family(family: str, tmp: Path, calib: list[Path], images: list[Path], rounds: int) -> None:
    import torch
    from backends import export, make_model

    from segcli import Segmenter
    from segcli.backends.onnx_session import session

    model_dir = make_model(family, tmp / family)
    fp32 = export(model_dir, tmp / f"{family}.onnx", dynamic=False)
    q = tmp / f"{family}-int8.onnx"
    t = time.monotonic()
    cmd = [sys.executable, "-m", "segcli", "quantize", str(model_dir), "--calib", str(calib[0].parent)]
    cmd += ["-o", str(q), "--preset", "hf", "--min-agreement", "0", "--check-images", "2", "--json", "-q"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0 or fp32 is None:
        print(f"{family}: export or quantize failed: {r.stderr.strip()}")
        return
    made = time.monotonic() - t
    net = Segmenter.from_pretrained(model_dir).network
    feeds = [np.ascontiguousarray(net.normalize(_view(p)).numpy()) for p in images]  # [1, 3, 512, 512]
    s32, s8 = session(fp32), session(q)
    runs = {
        "eager fp32": lambda x: net(torch.from_numpy(x)).numpy(),
        "ort fp32": lambda x: s32.run(None, {"input": x})[0],
        "ort int8": lambda x: s8.run(None, {"input": x})[0],
        "openvino int8": _openvino(q),
    }
    with torch.inference_mode():
        ref = [runs["eager fp32"](x).argmax(1) for x in feeds]
        agree = {
            k: float(np.mean([(f(x).argmax(1) == y).mean() for x, y in zip(feeds, ref, strict=True)]))
            for k, f in runs.items()
        }
        times: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(rounds):
            for k, f in runs.items():
                t = time.perf_counter()
                for x in feeds:
                    f(x)
                times[k].append((time.perf_counter() - t) / len(feeds))
    eager = statistics.median(times["eager fp32"])
    print(f"\n{family} (hf 512x512, {len(feeds)} images; quantize took {made:.0f} s incl. export)", flush=True)
    print(f"{'runtime':<15} {'s/image':>8} {'vs eager':>9} {'labels = eager':>15}")
    for k in runs:
        m = statistics.median(times[k])
        print(f"{k:<15} {m:>8.3f} {eager / m:>8.2f}x {agree[k] * 100:>14.2f}%", flush=True)


def _view(path: Path):
    import torch
    from PIL import Image

    rgb = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)[None].float()
    return torch.nn.functional.interpolate(rgb, size=(512, 512), mode="bilinear", align_corners=False)


if __name__ == "__main__":
    main()
