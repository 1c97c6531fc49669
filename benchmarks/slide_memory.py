"""Peak memory and wall time of sliding-window inference on large images: segcli vs a full-size buffer.

    python benchmarks/slide_memory.py                 # 2048², 4096², 8192² (several minutes on 2 cores)
    python benchmarks/slide_memory.py --sizes 2048    # one size

Model: UPerNet with a small random ConvNeXt (depths 1-1-1-1, widths 32-256, head 64 channels) and 150
classes, so the run is dominated by the accumulation, not the network. Each measurement runs in a fresh
process; peak RSS is that process's ru_maxrss. The full-buffer method is mmseg 1.2.2's
`EncoderDecoder.slide_inference` (a [K, H, W] float32 sum plus a count map, divided at the end, then
argmax), written out here so it needs no mmseg; it is only run where its buffer fits in RAM.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

CROP, STRIDE, K = 512, 341, 150


def build_model():
    import torch

    from segcli.model import Segmentor, SegmentorConfig
    from segcli.model.backbones import ConvNeXtConfig
    from segcli.model.heads.uper import UPerHeadConfig

    torch.manual_seed(0)
    bb = ConvNeXtConfig(depths=(1, 1, 1, 1), widths=(32, 64, 128, 256))
    return Segmentor(SegmentorConfig(bb, UPerHeadConfig(bb.out_channels, K, channels=64))).eval()


def image(size: int):
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def run_segcli(size: int) -> dict:
    from segcli.engine import predict
    from segcli.engine.presets import Params, Resize

    model, img = build_model(), image(size)
    params = Params("bench", Resize("none"), "bilinear", "slide", (CROP, CROP), (STRIDE, STRIDE))
    t = time.perf_counter()
    out = predict(model, img, params)
    return {"seconds": time.perf_counter() - t, "held_mb": out.held_elements * 4 / 2**20}, out.labels


def run_full_buffer(size: int) -> dict:
    import torch
    import torch.nn.functional as F

    model, img = build_model(), image(size)
    t = time.perf_counter()
    with torch.inference_mode():
        x = model.normalize(torch.from_numpy(img).permute(2, 0, 1)[None].float())
        h, w = size, size
        hg = max(h - CROP + STRIDE - 1, 0) // STRIDE + 1
        wg = max(w - CROP + STRIDE - 1, 0) // STRIDE + 1
        preds = x.new_zeros((1, K, h, w))
        count = x.new_zeros((1, 1, h, w))
        for hi in range(hg):
            for wi in range(wg):
                y1, x1 = hi * STRIDE, wi * STRIDE
                y2, x2 = min(y1 + CROP, h), min(x1 + CROP, w)
                y1, x1 = max(y2 - CROP, 0), max(x2 - CROP, 0)
                preds += F.pad(model(x[:, :, y1:y2, x1:x2]), (x1, w - x2, y1, h - y2))
                count[:, :, y1:y2, x1:x2] += 1
        labels = (preds / count).argmax(1)[0]
    return {"seconds": time.perf_counter() - t, "held_mb": K * h * w * 4 / 2**20}, labels.numpy()


def child(method: str, size: int, labels_path: str) -> None:
    import numpy as np

    result, labels = (run_segcli if method == "segcli" else run_full_buffer)(size)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    np.save(labels_path, labels)
    print(json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="2048,4096,8192")
    ap.add_argument(
        "--full-buffer-max-gb",
        type=float,
        default=6.0,
        help="skip the full buffer above this (it also allocates a padded copy per window)",
    )
    ap.add_argument("--child", nargs=3, metavar=("METHOD", "SIZE", "LABELS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child[0], int(args.child[1]), args.child[2])
    import tempfile

    import numpy as np
    import torch

    tmp = tempfile.mkdtemp()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; crop {CROP}, stride {STRIDE}, {K} classes")
    print(f"{'size':>6} {'method':>12} {'windows':>8} {'wall s':>8} {'peak RSS':>10} {'accumulator':>12}")
    for size in (int(s) for s in args.sizes.split(",")):
        grid = (max(size - CROP + STRIDE - 1, 0) // STRIDE + 1) ** 2
        labels = {}
        for method in ("segcli", "full-buffer"):
            need_gb = K * size * size * 4 / 1e9
            if method == "full-buffer" and need_gb > args.full_buffer_max_gb:
                print(f"{size:>6} {method:>12} {grid:>8} {'-':>8} {'-':>10} {need_gb:>9.1f} GB  (not run)")
                continue
            path = f"{tmp}/{method}-{size}.npy"
            cmd = [sys.executable, __file__, "--child", method, str(size), path]
            r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            labels[method] = path
            print(
                f"{size:>6} {method:>12} {grid:>8} {r['seconds']:>8.1f} {r['peak_rss_mb'] / 1024:>7.2f} GiB"
                f" {r['held_mb'] / 1024:>8.2f} GiB"
            )
        if len(labels) == 2:
            same = (np.load(labels["segcli"]) == np.load(labels["full-buffer"])).mean()
            print(f"{'':>6} label agreement segcli vs full buffer: {same:.7f}")


if __name__ == "__main__":
    main()
