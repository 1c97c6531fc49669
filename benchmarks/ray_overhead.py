"""What Ray costs: the same images through `segcli predict` single-process and with `--ray` (a local Ray, N
workers × T threads), on this machine. Rates exclude Ray's start-up, which is timed on its own.

    python benchmarks/ray_overhead.py                     # 64 images 512×683, UPerNet ConvNeXt-T, 2 workers × 1
    python benchmarks/ray_overhead.py --images 16 --rounds 1

Both sides run the library calls the CLI makes (`batch.run`, `segcli.ray.run`) on a random-weight
UPerNet ConvNeXt-T (the real upernet-convnext-tiny architecture) with the `hf` preset, `--save json`.
Single-process uses torch's default threads (2 here); rounds alternate between the two (medians printed).
Needs the test extra (transformers, to write the model) and the ray extra.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    from machine import cpu_line
    from predict_throughput import make_images, make_model

    from segcli import batch
    from segcli.api import Segmenter
    from segcli.batch import ray as seg_ray
    from segcli.io.inputs import discover

    tmp = Path(tempfile.mkdtemp(prefix="segcli-ray-bench-"))
    make_model(tmp / "model")
    make_images(tmp / "in", args.images)
    seg = Segmenter.from_pretrained(tmp / "model")
    params = seg.params("hf")
    items = discover([str(tmp / "in")]).items

    t = time.perf_counter()
    seg_ray.connect("local")
    startup = time.perf_counter() - t
    workers, _gpus, threads = seg_ray.cluster_defaults(args.threads, 0, args.workers)
    rates: dict[str, list[float]] = {"single process": [], f"ray {workers}×{threads}": []}
    for r in range(args.rounds):
        for name in rates:
            out = tmp / f"out-{r}-{name.split()[0]}"
            opts = batch.Options(out, frozenset({"json"}))
            summary = batch.RunSummary(tuple(seg.classes))
            t = time.perf_counter()
            if name.startswith("ray"):
                job = seg_ray.job_for(
                    seg, str(tmp / "model"), params, opts, gpus=0, threads=threads, dtype="float32", registry=None
                )
                seg_ray.run(
                    seg,
                    job,
                    items,
                    workers=workers,
                    gpus=0,
                    report=lambda r: None,
                    should_stop=lambda: False,
                    summary=summary,
                )
            else:
                batch.run(seg, items, params, opts, summary=summary)
            seconds = time.perf_counter() - t
            assert summary.done == len(items), summary.to_json({}, "", {}, [], {})["failures"]
            rates[name].append(len(items) / seconds)
            print(f"round {r + 1} {name}: {len(items) / seconds:.3f} images/s ({seconds:.1f} s)", flush=True)
    print(f"\n{cpu_line()}; torch threads (single process) {__import__('torch').get_num_threads()}")
    print(
        f"{args.images} images 512×683 → hf 512×512, UPerNet ConvNeXt-T; Ray start-up {startup:.1f} s (not in the rates)"
    )
    medians = {k: statistics.median(v) for k, v in rates.items()}
    for name, rate in medians.items():
        print(f"  {name:<16} {rate:.3f} images/s (median of {len(rates[name])})")
    single, ray_rate = medians["single process"], list(medians.values())[1]
    print(f"  ray / single = {ray_rate / single:.3f}  (target: within 15 %, i.e. ≥ 0.85)")


if __name__ == "__main__":
    main()
