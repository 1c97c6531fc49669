"""Training throughput on one machine's CPU cores: one process vs 2 torchrun ranks (gloo) vs Ray Train 2 × 1
worker, the same global batch and the same total threads; the scaling efficiency and where time goes.

    python benchmarks/train_scale.py                        # UperNet-ConvNeXt-T (real widths), crop 128, 8 iters
    python benchmarks/train_scale.py --rounds 2 --iters 12 --crop 160

Every run is a real `segcli train` command on generated shapes (16 images), random weights of the real
architecture, `--batch 2` in one process with OMP_NUM_THREADS=2, `--batch 1` per rank with 1 thread each
under torchrun and Ray Train with `--sync-bn` (one image per rank cannot normalise the PPM's 1×1 bin
alone). Throughput is the
run's own figure (images/s over its iterations after the first, from RUN/log.jsonl), so start-up (imports,
Ray, the process group) is left out and printed apart. Rounds interleave the three ways; medians.
Efficiency = (2 ranks' images/s) / (one process's images/s) at the same cores. "all-reduce" is the median
time of one gloo all-reduce of the model's gradients (every parameter, float32) between 2 ranks, measured
on its own, and its share of the 2-rank step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

WAYS = ("one process", "torchrun 2", "ray train 2")


def _setup(root: Path) -> tuple[Path, Path, int]:
    from helpers import hf_convnext, randomize_, save_hf_dir
    from test_train import dataset

    model = randomize_(hf_convnext((3, 3, 9, 3), (96, 192, 384, 768)), seed=0)
    params = sum(p.numel() for p in model.parameters())
    return dataset(root / "data", 16), save_hf_dir(model, root / "model"), params


def _run(way: str, data: Path, model: Path, out: Path, iters: int, crop: int) -> tuple[float, float]:
    """(images/s after the first iteration, seconds from the command's start to its first logged iteration)."""
    one = way == "one process"
    base = ["segcli", "train", str(data), "-m", str(model), "-o", str(out), "--iters", str(iters), "--crop", str(crop)]
    base += ["--batch", "2" if one else "1", "--workers", "0", "--log-every", "1", "--no-report", "--amp", "off"]
    base += ["--val-every", str(10 * iters), *([] if one else ["--sync-bn"])]
    if way == "torchrun 2":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", *base]
    else:
        cmd = [sys.executable, "-m", *base, *(["--ray", "--ray-workers", "2"] if way == "ray train 2" else [])]
    env = {**os.environ, "OMP_NUM_THREADS": "2" if one else "1"}
    start = time.time()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "total" in r]
    # images/s is cumulative from the loop's start: the rate over iterations 2..N from two cumulative figures
    n1, r1 = steps[0]["iter"], steps[0]["images_per_s"]
    n, r = steps[-1]["iter"], steps[-1]["images_per_s"]
    images = 2  # the global batch
    t1, t = n1 * images / r1, n * images / r
    return (n - n1) * images / (t - t1), time.time() - start - t


def _allreduce_worker(params: int, rounds: int) -> None:
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    x = torch.ones(params)
    times = []
    for _ in range(rounds + 1):
        dist.barrier()
        t = time.perf_counter()
        dist.all_reduce(x)
        times.append(time.perf_counter() - t)
    if dist.get_rank() == 0:
        print(json.dumps({"seconds": statistics.median(times[1:])}))
    dist.destroy_process_group()


def _allreduce(params: int) -> float:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", __file__]
    cmd += ["--allreduce-worker", str(params)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, check=True, env=env, capture_output=True, text=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["seconds"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--iters", type=int, default=8)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--ways", nargs="+", default=list(WAYS), choices=WAYS)
    p.add_argument("--allreduce-worker", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.allreduce_worker is not None:
        _allreduce_worker(args.allreduce_worker, 5)
        return
    from machine import cpu_line

    rates: dict[str, list[float]] = {w: [] for w in args.ways}
    setup: dict[str, list[float]] = {w: [] for w in args.ways}
    with tempfile.TemporaryDirectory() as d:
        data, model, params = _setup(Path(d))
        for r in range(args.rounds):
            for way in args.ways:
                rate, started = _run(
                    way, data, model, Path(d) / f"run-{r}-{way.replace(' ', '-')}", args.iters, args.crop
                )
                rates[way].append(rate)
                setup[way].append(started)
                print(f"  round {r + 1}: {way}: {rate:.3f} img/s (start-up {started:.0f} s)", file=sys.stderr)
        reduce_s = _allreduce(params)
    print(f"machine: {cpu_line()}")
    print(
        f"UperNet-ConvNeXt-T ({params / 1e6:.1f}M parameters), crop {args.crop}, global batch 2, {args.iters} iterations"
    )
    base = statistics.median(rates[args.ways[0]])
    print(f"{'way':14} {'img/s':>8} {'× one process':>14} {'start-up s':>11}")
    for way in args.ways:
        rate = statistics.median(rates[way])
        print(f"{way:14} {rate:8.3f} {rate / base:14.2f} {statistics.median(setup[way]):11.0f}")
    if "torchrun 2" in rates:
        step = 2 / statistics.median(rates["torchrun 2"])
        print(f"all-reduce of {params / 1e6:.1f}M float32 gradients (gloo, 2 ranks): {reduce_s:.3f} s "
              f"= {100 * reduce_s / step:.0f} % of a 2-rank step ({step:.2f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
