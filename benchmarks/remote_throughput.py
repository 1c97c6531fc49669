"""Throughput of `segcli predict` on images in an S3 bucket (moto's S3-API server on 127.0.0.1) vs the same
images on disk, single process and with `--ray` (a local Ray, N workers × T threads), on this machine; and
with the outputs uploaded to the bucket too (`-o s3://…`, "S3→S3").

    python benchmarks/remote_throughput.py                       # 64 JPEGs 512×683, tiny model: I/O shows
    python benchmarks/remote_throughput.py --model convnext-t    # the real UPerNet ConvNeXt-T architecture

Both sides run the library calls the CLI makes (discovery, `batch.run`, `segcli.ray.run`) with `--save json`
and the `hf` preset; a run's time includes listing the bucket (or scanning the folder). Rounds alternate
disk / S3 (medians printed). moto runs in its own process and is no real network: the figures show what
segcli adds (listing, requests, per-object reads), not a store's latency. Needs the test extra (moto,
transformers) and the remote and ray extras.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _model(kind: str, path: Path) -> None:
    if kind == "convnext-t":
        from predict_throughput import make_model

        make_model(path)
    else:
        from helpers import randomize_, save_hf_dir, tiny_convnext

        save_hf_dir(randomize_(tiny_convnext(), seed=3), path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model", choices=("tiny", "convnext-t"), default="tiny")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-ray", action="store_true")
    args = ap.parse_args()

    import boto3
    from machine import cpu_line
    from predict_throughput import make_images
    from servers import moto_server, s3_env

    from segcli import batch
    from segcli.api import Segmenter
    from segcli.batch import ray as seg_ray
    from segcli.batch.outbox import Outbox
    from segcli.io.inputs import discover
    from segcli.io.remote import RemoteOptions

    tmp = Path(tempfile.mkdtemp(prefix="segcli-remote-bench-"))
    os.environ["SEGCLI_CACHE"] = str(tmp / "cache")  # the staging folders of S3→S3 (and Ray's workers')
    _model(args.model, tmp / "model")
    paths = make_images(tmp / "in", args.images)
    seg = Segmenter.from_pretrained(tmp / "model")
    params = seg.params("hf")
    with moto_server() as endpoint:
        os.environ.update(s3_env(endpoint))  # before Ray starts: its workers inherit the store's variables
        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket="bench")
        for p in paths:
            client.put_object(Bucket="bench", Key=f"in/{p.name}", Body=p.read_bytes())
        sources = {"disk": str(tmp / "in"), "s3": "s3://bench/in/", "s3→s3": "s3://bench/in/"}
        modes = ["single"] if args.no_ray else ["single", "ray"]
        startup = 0.0
        if "ray" in modes:
            t = time.perf_counter()
            seg_ray.connect("local")
            startup = time.perf_counter() - t
        workers, _gpus, threads = seg_ray.cluster_defaults(args.threads, 0, args.workers)
        rates: dict[tuple[str, str], list[float]] = {}
        for r in range(args.rounds):
            for mode in modes:
                for where, source in sources.items():
                    out, publish = tmp / f"out-{r}-{mode}-{where}", None
                    if where == "s3→s3":  # outputs uploaded to the bucket as they are made (batch.outbox)
                        publish = f"s3://bench/out-{r}-{mode}"
                        out = Outbox.of(publish, RemoteOptions()).root
                        out.mkdir(parents=True, exist_ok=True)
                    opts = batch.Options(out, frozenset({"json"}), remote=RemoteOptions(), publish=publish)
                    summary = batch.RunSummary(tuple(seg.classes))
                    t = time.perf_counter()
                    items = discover([source], remote=RemoteOptions()).items
                    if mode == "ray":
                        job = seg_ray.job_for(
                            seg, str(tmp / "model"), params, opts, gpus=0, threads=threads, dtype="float32",
                            registry=None,
                        )  # fmt: skip
                        seg_ray.run(seg, job, items, workers=workers, gpus=0, report=lambda r: None,
                                    should_stop=lambda: False, summary=summary)  # fmt: skip
                    else:
                        batch.run(seg, items, params, opts, summary=summary)
                    seconds = time.perf_counter() - t
                    assert summary.done == args.images, summary.failures[:3]
                    rates.setdefault((mode, where), []).append(args.images / seconds)
                    print(f"round {r + 1} {mode} {where}: {args.images / seconds:.2f} images/s", flush=True)
    import torch

    print(f"\n{cpu_line()}; torch threads (single process) {torch.get_num_threads()}")
    name = "UPerNet ConvNeXt-T (random weights)" if args.model == "convnext-t" else "tiny UPerNet-ConvNeXt"
    ray_line = f"; Ray {workers}×{threads}, start-up {startup:.1f} s (not in the rates)" if "ray" in modes else ""
    print(f"{args.images} JPEGs 512×683 → hf 512×512, {name}, --save json{ray_line}")
    print(f"{'':>8} {'disk img/s':>11} {'S3 img/s':>9} {'S3 / disk':>10} {'S3→S3 img/s':>12} {'/ disk':>7}"
          f"   (medians of {args.rounds}; S3→S3: outputs uploaded too)")  # fmt: skip
    for mode in modes:
        disk, s3, both = (statistics.median(rates[(mode, w)]) for w in sources)
        print(f"{mode:>8} {disk:>11.2f} {s3:>9.2f} {s3 / disk:>10.3f} {both:>12.2f} {both / disk:>7.3f}")


if __name__ == "__main__":
    main()
