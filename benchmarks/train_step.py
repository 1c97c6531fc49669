"""One training step on a CPU: segcli vs mmsegmentation 1.2.2's `train_step` vs transformers' UperNet
forward + backward, at the real model sizes.

    python benchmarks/train_step.py                        # PSPNet-R50-D8, UPerNet-ConvNeXt-T, UPerNet-Swin-T
    python benchmarks/train_step.py --models swin --rounds 3 --steps 3

Every (model, implementation) runs in a fresh process (so each peak RSS is its own): build the network with
random weights, its optimizer (the family's recipe: SGD for ResNet, AdamW otherwise), one seeded batch of
`--batch` uint8 images `--crop` pixels square with 150-class labels (a band of ignore-index rows), one
warm-up step, then `--steps` timed steps of normalise → forward → loss → backward → optimizer step:

  segcli        `segcli.train.step.step_once` on the registry's network (mmseg-style 0.1 dropout before the
                classifiers for the mmseg-origin PSPNet; the hub models' loss mean), float32; and `segcli-bf16`,
                the same under bf16 autocast (what --amp auto picks on a CPU with AVX512-BF16 / AMX)
  mmseg         `EncoderDecoder.train_step(data, OptimWrapper)` built from mmseg's own config
                (pspnet_r50-d8_4xb4-80k_ade20k-512x512, swin-tiny…upernet_8xb2-160k_ade20k-512x512; SyncBN
                as BN: one process). mmseg's ConvNeXt is mmpretrain's, which needs torchvision's compiled
                ops: not measured.
  transformers  `UperNetForSemanticSegmentation(pixel_values, labels).loss.backward()` + the optimizer step
                (no PSPNet in transformers)

Rounds interleave the processes; the figure is the median over rounds of each process's median step; RSS is
the process's peak (ru_maxrss) and its growth over the built model ("step"). Needs the [test] extra.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

MODELS = {  # name: (registry entry, mmseg config or None, transformers builder or None)
    "pspnet": ("pspnet-r50-d8-ade20k", "pspnet/pspnet_r50-d8_4xb4-80k_ade20k-512x512.py", None),
    "convnext": ("upernet-convnext-tiny", None, "convnext"),
    "swin": ("upernet-swin-tiny", "swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py", "swin"),
}
MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def batch(n: int, crop: int) -> tuple[Any, Any]:
    import torch

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, crop, crop), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 150, (n, crop, crop), generator=g)
    labels[:, : crop // 16] = 255
    return images, labels


def _optimizer(params: Any, family: str) -> Any:
    import torch

    if family == "pspnet":
        return torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)
    return torch.optim.AdamW(params, lr=6e-5, weight_decay=0.01)


def segcli_step(model: str, images: Any, labels: Any, bf16: bool) -> Any:
    import torch
    from helpers import randomize_

    from segcli.loading.registry import load_registry
    from segcli.model import Segmentor
    from segcli.train.loss import add_dropout
    from segcli.train.step import Objective, step_once

    spec = load_registry()[MODELS[model][0]]
    net = randomize_(Segmentor(spec.network)).train()
    mmseg_origin = model == "pspnet"
    add_dropout(net, 0.1 if mmseg_origin else 0.0)
    opt = _optimizer(net.parameters(), model)
    mean = "all" if mmseg_origin else "labelled"
    amp = torch.bfloat16 if bf16 else None
    return lambda: step_once(Objective(net, mean), opt, [(images, labels)], amp, None)


def _bn(cfg: Any) -> Any:
    """SyncBN as BN (one process)."""
    if isinstance(cfg, dict):
        return {k: "BN" if k == "type" and v == "SyncBN" else _bn(v) for k, v in cfg.items()}
    if isinstance(cfg, list):
        return [_bn(v) for v in cfg]
    return cfg


def mmseg_step(model: str, images: Any, labels: Any) -> Any:
    from mmseg_ref import import_mmseg

    mmseg = import_mmseg()
    import torch
    from mmengine import Config
    from mmengine.optim import OptimWrapper
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS as REGISTRY
    from mmseg.structures import SegDataSample

    cfg = Config.fromfile(str(Path(mmseg.__file__).parent / ".mim" / "configs" / MODELS[model][1]))
    m = _bn(cfg.model.to_dict())
    m["pretrained"] = None
    m["backbone"]["init_cfg"] = None
    m["data_preprocessor"] = {**m["data_preprocessor"], "size": tuple(images.shape[-2:])}
    net = REGISTRY.build(m).train()
    wrapper = OptimWrapper(_optimizer(net.parameters(), model))
    h, w = images.shape[-2:]
    samples = []
    for lab in labels:
        s = SegDataSample(metainfo={"img_shape": (h, w), "ori_shape": (h, w), "pad_shape": (h, w)})
        s.gt_sem_seg = PixelData(data=lab[None])
        samples.append(s)
    data = {"inputs": list(images), "data_samples": samples}
    torch.manual_seed(0)
    return lambda: net.train_step(data, wrapper)


def transformers_step(model: str, images: Any, labels: Any) -> Any:
    import torch
    from helpers import hf_convnext, hf_swin, randomize_

    if MODELS[model][2] == "convnext":
        hf = hf_convnext((3, 3, 9, 3), (96, 192, 384, 768), aux_in=384)
    else:
        hf = hf_swin(96, (2, 2, 6, 2), (3, 6, 12, 24), 7, aux_in=384)
    hf = randomize_(hf).train()
    opt = _optimizer(hf.parameters(), model)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)

    def step() -> None:
        x = (images.float() - mean) / std
        loss = hf(pixel_values=x, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def child(model: str, impl: str, n: int, crop: int, steps: int) -> None:
    import torch

    torch.manual_seed(0)
    images, labels = batch(n, crop)
    if impl.startswith("segcli"):
        step = segcli_step(model, images, labels, impl == "segcli-bf16")
    elif impl == "mmseg":
        step = mmseg_step(model, images, labels)
    else:
        step = transformers_step(model, images, labels)
    base = rss_mb()
    step()  # warm-up (the optimizer's state is allocated here)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"times": times, "peak_mb": peak, "built_mb": base}))


def implementations(model: str, bf16: bool) -> list[str]:
    out = ["segcli"] + (["segcli-bf16"] if bf16 else [])
    if MODELS[model][1]:
        out.append("mmseg")
    if MODELS[model][2]:
        out.append("transformers")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="pspnet,convnext,swin")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--crop", type=int, default=512)
    ap.add_argument("--child", nargs=2, metavar=("MODEL", "IMPL"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child, args.batch, args.crop, args.steps)
        return
    import torch
    from machine import cpu_line

    from segcli.backends.hardware import native_bf16

    bf16 = native_bf16(torch.device("cpu"))
    print(f"{cpu_line()}; torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    print(f"batch {args.batch} × {args.crop}², {args.steps} timed steps per process, {args.rounds} rounds", flush=True)
    models = args.models.split(",")
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in range(args.rounds):
        for model in models:
            for impl in implementations(model, bf16):
                cmd = [sys.executable, __file__, "--child", model, impl, "--batch", str(args.batch)]
                cmd += ["--crop", str(args.crop), "--steps", str(args.steps)]
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode != 0:
                    print(f"round {r + 1} {model} {impl}: failed\n{out.stderr[-2000:]}", flush=True)
                    continue
                res = json.loads(out.stdout.strip().splitlines()[-1])
                results.setdefault((model, impl), []).append(res)
                step = statistics.median(res["times"])
                print(
                    f"round {r + 1} {model:8s} {impl:12s} {step:7.2f} s/step, peak {res['peak_mb']:7.0f} MB", flush=True
                )
    print()
    print("| model | implementation | s/step | it/s | × fastest peer | peak RSS MB | step RSS MB |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for model in models:
        rows = {i: v for (m, i), v in results.items() if m == model}
        med = {i: statistics.median(statistics.median(x["times"]) for x in v) for i, v in rows.items()}
        peers = [med[i] for i in ("mmseg", "transformers") if i in med]
        best = min(peers) if peers else None
        for impl, v in rows.items():
            peak = max(x["peak_mb"] for x in v)
            grow = max(x["peak_mb"] - x["built_mb"] for x in v)
            ratio = f"{best / med[impl]:.2f}×" if best else "-"
            print(f"| {model} | {impl} | {med[impl]:.2f} | {1 / med[impl]:.3f} | {ratio} | {peak:.0f} | {grow:.0f} |")


if __name__ == "__main__":
    main()
