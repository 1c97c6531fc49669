"""One table for this machine: images/s, peak RSS and label agreement of every way to run a model on a CPU.

    python benchmarks/backends.py                                    # all models, modes, backends, 3 rounds
    python benchmarks/backends.py --models convnext --modes hf --backends eager,ort-static,transformers

Models (the registry's real architectures, random weights drawn as the parity tests draw them): UPerNet
ConvNeXt-T and Swin-T (saved with transformers' save_pretrained, so the transformers loop runs the same
weights) and PSPNet ResNet-50-D8 (segcli's own model directory). Modes: `hf` (resize to 512×512, one
window) and `slide` (mmseg: 512-pixel windows, stride 341, on the image resized to 512 short side).
Backends: `eager` (torch float32: segcli's default here), `bf16` (torch bfloat16; skipped unless the CPU has
AVX512-BF16/AMX or --force-bf16), `compile` (torch.compile, inductor), `ort-static` / `ort-dynamic`
(`segcli export` to ONNX at 512×512 / any size, run by onnxruntime through segcli), `openvino` (`--backend
openvino`: segcli's export compiled by OpenVINO, static at a preset's one view size), `transformers`
(UperNetForSemanticSegmentation + its image processor, `hf` mode only: the outside reference), `default`
(what `segcli predict` runs without flags: `--dtype auto --backend auto`, its calibration made at start-up
in a fresh cache). For each model and mode the default's rate is printed as a share of the fastest.

Each backend runs in its own worker process (model loaded, exported or compiled once, then warmed up);
rounds interleave the backends so machine noise spreads over all of them; medians are printed with the
ratio to eager and the share of pixels labelled as eager labels them. Images: synthetic 512×683 photos.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

MODELS = {"convnext": "upernet-convnext-tiny", "swin": "upernet-swin-tiny", "pspnet": "pspnet-r50-d8-ade20k"}
MODES = {"hf": {"preset": "hf"}, "slide": {"preset": "mmseg", "mode": "slide"}}
BACKENDS = ("eager", "bf16", "compile", "ort-static", "ort-dynamic", "openvino", "transformers", "default")


def make_model(family: str, folder: Path) -> Path:
    """The model directory segcli loads (and transformers too, for the UPerNet families)."""
    import torch
    from helpers import hf_convnext, hf_swin, randomize_

    torch.manual_seed(0)
    if family == "convnext":
        model = hf_convnext((3, 3, 9, 3), (96, 192, 384, 768), aux_in=384)
    elif family == "swin":
        model = hf_swin(96, (2, 2, 6, 2), (3, 6, 12, 24), 7, aux_in=384)
    else:
        from segcli.backends.export import save_native
        from segcli.loading.registry import load_registry
        from segcli.model import Segmentor

        spec = load_registry()[MODELS[family]]
        net = randomize_(Segmentor(spec.network), seed=7).eval()
        return save_native(net, spec.info(), folder, dtype=torch.float32)
    from transformers import SegformerImageProcessor

    randomize_(model, seed=7).save_pretrained(folder, safe_serialization=True)
    SegformerImageProcessor().save_pretrained(folder)
    return folder


def export(model_dir: Path, out: Path, dynamic: bool) -> Path | None:
    cmd = [sys.executable, "-m", "segcli", "export", str(model_dir), "-o", str(out), "--format", "onnx", "-q"]
    r = subprocess.run(cmd + (["--dynamic"] if dynamic else []), capture_output=True, text=True)
    return out if r.returncode == 0 else None


WORKER = r"""
import json, resource, sys, time
import numpy as np, torch
from PIL import Image
backend, source, mode, images = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4:]
pixels = [np.asarray(Image.open(p).convert("RGB")) for p in images]
if backend == "transformers":
    from transformers import SegformerImageProcessor, UperNetForSemanticSegmentation
    proc = SegformerImageProcessor.from_pretrained(source)
    net = UperNetForSemanticSegmentation.from_pretrained(source).eval()
    def predict(im):
        with torch.inference_mode():
            out = net(**proc(images=im, return_tensors="pt"))
        return proc.post_process_semantic_segmentation(out, target_sizes=[im.shape[:2]])[0].numpy()
else:
    from segcli import Segmenter
    seg = Segmenter.from_pretrained(source, dtype="bfloat16" if backend == "bf16" else "float32")
    params = seg.params(**mode)
    if backend == "default":  # what `segcli predict` does without flags: --dtype auto --backend auto
        seg = Segmenter.from_pretrained(source, dtype="auto")
        seg.use_backend("auto", params, log=lambda m: print(m, file=sys.stderr))
    elif backend in ("compile", "openvino"):
        seg.use_backend(backend, params)
    def predict(im):
        return seg.predict(im, params)
predict(pixels[0])  # warm-up (and compilation)
runs = "transformers float32" if backend == "transformers" else f"{seg.backend} {str(seg.dtype).removeprefix('torch.')}"
print("ready", runs, flush=True)
for line in sys.stdin:
    t = time.perf_counter()
    labels = [predict(im) for im in pixels]
    seconds = time.perf_counter() - t
    np.save(line.strip(), np.stack(labels))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"seconds": seconds, "rss_gib": rss}), flush=True)
"""


class Worker:
    def __init__(self, backend: str, source: Path, mode: dict, images: list[Path]) -> None:
        args = [sys.executable, "-c", WORKER, backend, str(source), json.dumps(mode), *map(str, images)]
        self.p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = self.p.stdout.readline().split()
        self.ok = ready[:1] == ["ready"]
        self.runs = " ".join(ready[1:])  # the backend and dtype it runs

    def run(self, labels_path: Path) -> dict:
        self.p.stdin.write(f"{labels_path}\n")
        self.p.stdin.flush()
        return json.loads(self.p.stdout.readline())

    def close(self) -> None:
        self.p.stdin.close()
        self.p.wait()


def _gflop_per_image(model_dir: Path, mode: dict, image: Path) -> float:
    """GFLOP of one image's prediction in `mode` (every window and view), counted on eager's graph."""
    from PIL import Image
    from roofline import count_flops

    from segcli import Segmenter

    seg = Segmenter.from_pretrained(model_dir)
    pixels = np.asarray(Image.open(image).convert("RGB"))
    params = seg.params(**mode)
    return count_flops(lambda: seg.predict(pixels, params)) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--force-bf16", action="store_true", help="run bf16 even where it is emulated")
    ap.add_argument("--roofline", action="store_true", help="+ each backend's GFLOP/s and share of the conv peak")
    args = ap.parse_args()

    import torch
    from machine import cpu_line
    from predict_throughput import make_images

    from segcli.backends.hardware import native_bf16

    tmp = Path(tempfile.mkdtemp(prefix="segcli-backends-"))
    os.environ["SEGCLI_CACHE"] = str(tmp / "cache")  # the default's calibration: measured in this run
    images = make_images(tmp / "images", args.images)
    print(f"{cpu_line()}; torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    bf16 = args.force_bf16 or native_bf16(torch.device("cpu"))
    conv_peak = None
    if args.roofline:
        from roofline import peaks

        peak = peaks(native_bf16(torch.device("cpu")))
        print("measured peaks: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peak.items()), flush=True)
        conv_peak = peak["conv3x3 fp32"]
    for family in args.models.split(","):
        model_dir = make_model(family, tmp / family)
        onnx = {
            "ort-static": export(model_dir, tmp / f"{family}-static.onnx", dynamic=False),
            "ort-dynamic": None if family == "swin" else export(model_dir, tmp / f"{family}-dynamic.onnx", True),
        }
        for mode_name in args.modes.split(","):
            mode = MODES[mode_name]
            workers = {}
            for b in args.backends.split(","):
                if (b == "bf16" and not bf16) or (b == "transformers" and (family == "pspnet" or mode_name != "hf")):
                    continue
                source = onnx.get(b, model_dir) if b.startswith("ort") else model_dir
                if source is None:
                    continue
                w = Worker(b, source, mode, images)
                if w.ok:
                    workers[b] = w
            times: dict[str, list[float]] = {b: [] for b in workers}
            rss: dict[str, float] = {}
            for _ in range(args.rounds):
                for b, w in workers.items():
                    out = w.run(tmp / f"{family}-{mode_name}-{b}.npy")
                    times[b].append(out["seconds"])
                    rss[b] = out["rss_gib"]
            for w in workers.values():
                w.close()
            eager = np.load(tmp / f"{family}-{mode_name}-eager.npy") if "eager" in workers else None
            base = statistics.median(times["eager"]) if "eager" in times else None
            print(f"\n{family} / {mode_name} ({args.images} images 512×683, median of {args.rounds} rounds)")
            gflop = _gflop_per_image(model_dir, mode, images[0]) if conv_peak else None
            for b, t in times.items():
                med = statistics.median(t)
                labels = np.load(tmp / f"{family}-{mode_name}-{b}.npy")
                agree = float((labels == eager).mean()) if eager is not None else float("nan")
                ratio = base / med if base else float("nan")
                roof = ""
                if gflop and conv_peak:  # segcli's FLOPs (eager's graph) at this backend's rate
                    rate = gflop * args.images / med
                    roof = f"  {rate:6.1f} GFLOP/s = {100 * rate / conv_peak:4.1f} % conv peak"
                print(
                    f"  {b:<13} {args.images / med:6.3f} images/s  ×{ratio:5.2f} eager  "
                    f"peak RSS {rss[b]:5.2f} GiB  labels = eager {agree:.5f}  ({workers[b].runs}){roof}"
                )
            if "default" in times:
                best = min((b for b in times if b != "default"), key=lambda b: statistics.median(times[b]))
                share = statistics.median(times[best]) / statistics.median(times["default"])
                print(f"  default = {share:.2f} × the fastest other ({best}; target ≥ 0.90)")


if __name__ == "__main__":
    main()
