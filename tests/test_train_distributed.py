"""`segcli train` under torchrun: real processes, the gloo backend, 2 ranks on this CPU.

The reference is one process with the same global batch (2 ranks × --batch 1 against --batch 2, the same
seed): with --sync-bn the BatchNorm statistics are the global batch's and the loss divides by the global
batch's labelled pixels, so the loss curve and the trained weights agree to float tolerance. (The SGD
recipe: AdamW's first steps divide by the root of tiny second moments, which magnifies the all-reduce's
different summation order into 1e-3 differences of the loss after a few steps, a property of Adam, not of
the distribution.) A rank SIGKILLed mid-run stops the run with one line and `--resume` under torchrun
finishes it on that curve.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file
from test_train import dataset

from segcli.train.fit import fit
from segcli.train.step import Slice

ITERS = 6
COMMON = dict(crop=(32, 32), workers=0, log_every=1, report=False, amp="off", lr=2e-3, recipe="resnet")


@pytest.mark.parametrize("batch, ranks, accumulate", [(2, 1, 1), (1, 2, 1), (1, 1, 2), (1, 2, 2), (3, 2, 1)])
def test_the_ranks_read_the_one_process_stream(batch, ranks, accumulate):
    """Iteration s reads the samples [s·G, (s+1)·G) of the run's stream (G the global batch), each once,
    split over the ranks and micro-batches; resuming at iteration 3 reads the rest."""
    g = batch * ranks * accumulate
    seen = [Slice(0, 5, batch, r, ranks, accumulate) for r in range(ranks)]
    every = sorted(p.sample(i) for p in seen for i in range(len(p)))
    assert every == list(range(5 * g))
    for p in seen:  # iteration by iteration, in order: the loader's batches are the micro-batches
        per_iter = len(p) // 5
        for s in range(5):
            assert all(s * g <= p.sample(s * per_iter + i) < (s + 1) * g for i in range(per_iter))
    later = Slice(3, 5, batch, ranks - 1, ranks, accumulate)
    assert [later.sample(i) for i in range(len(later))] == [
        seen[-1].sample(i) for i in range(3 * per_iter, 5 * per_iter)
    ]


def test_accumulated_micro_batches_step_as_one_batch(small_model):
    """Two micro-batches of 1 with accumulated gradients make the step one batch of 2 makes (BatchNorm on
    its running statistics, mmseg's mean over all pixels: the same loss, the same gradient)."""
    import torch

    from segcli import Segmenter
    from segcli.train.step import Objective, step_once

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 3, (2, 32, 32), generator=g)
    labels[0, :8] = 255  # unlabelled rows: "all" still divides by every pixel
    after = []
    for micro in ([(images, labels)], [(images[:1], labels[:1]), (images[1:], labels[1:])]):
        net = Segmenter.from_pretrained(small_model).network.train()
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        terms = step_once(Objective(net, "all"), opt, micro, None, None)
        after.append((terms, {k: v.detach().clone() for k, v in net.state_dict().items()}))
    (t1, w1), (t2, w2) = after
    assert t1.keys() == t2.keys() and all(abs(t1[k] - t2[k]) < 1e-5 * abs(t1[k]) for k in t1)
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-5, atol=1e-7)
    assert any(
        not torch.equal(w1[k], v) for k, v in Segmenter.from_pretrained(small_model).network.state_dict().items()
    )


def _curve(run: Path) -> list[tuple[int, float, float]]:
    lines = (run / "log.jsonl").read_text().splitlines()
    return [(r["iter"], r["total"], r["lr"]) for r in map(json.loads, lines) if "total" in r]


def _torchrun(data: Path, model: Path, out: Path, *extra: str) -> subprocess.Popen:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m"]
    return _train(launcher, data, model, out, *extra)


def _train(launcher: list[str], data: Path, model: Path, out: Path, *extra: str) -> subprocess.Popen:
    """`segcli train` on the test's data, 2 ranks × --batch 1 with --sync-bn, started by `launcher`."""
    cmd = [*launcher, "segcli", "train", str(data), "-m", str(model), "-o", str(out), "--batch", "1", "--sync-bn"]
    cmd += ["--crop", "32", "--workers", "0", "--log-every", "1", "--no-report", "--amp", "off"]
    cmd += ["--lr", "2e-3", "--recipe", "resnet", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.fixture(scope="module")
def one_process(small_model, tmp_path_factory):
    """(data, the run of one process with --batch 2, the same settings)."""
    root = tmp_path_factory.mktemp("ddp")
    data = dataset(root / "data", 6)
    fit(data, str(small_model), root / "one", iters=ITERS, batch=2, val_every=2, **COMMON)
    return data, root / "one"


def _rank_pid(parent: int, rank: int, deadline: float) -> int:
    """The pid of torchrun's worker of `rank` (a child process with RANK=<rank> in its environment)."""
    while time.monotonic() < deadline:
        for task in Path(f"/proc/{parent}/task").iterdir():
            for child in (task / "children").read_text().split():
                try:
                    env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
                except OSError:
                    continue
                if f"RANK={rank}".encode() in env:
                    return int(child)
        time.sleep(0.05)
    raise AssertionError(f"no worker of rank {rank}")


@pytest.mark.slow
def test_two_ranks_train_as_one_process_and_a_killed_rank_resumes(small_model, one_process, tmp_path):
    """2 ranks × --batch 1 (--sync-bn), one SIGKILLed after the first checkpoint: the run stops with one line;
    --resume under torchrun ends it on the loss curve and the weights of 1 process × --batch 2."""
    data, one = one_process
    run = tmp_path / "two"
    p = _torchrun(data, small_model, run, "--iters", str(ITERS), "--val-every", "2")
    deadline = time.monotonic() + 300
    victim = _rank_pid(p.pid, 1, deadline)
    while not (run / "checkpoints" / "latest").exists():  # the first checkpoint (iteration 2)
        assert p.poll() is None and time.monotonic() < deadline, p.stderr.read() if p.stderr else ""
        time.sleep(0.01)
    os.kill(victim, signal.SIGSTOP)  # rank 0 cannot pass the next all-reduce: the run stops here
    os.kill(victim, signal.SIGKILL)
    _, err = p.communicate(timeout=300)
    assert p.returncode != 0
    assert "the run lost another rank" in err and "--resume" in err, err
    done = (run / "checkpoints" / "latest").read_text()
    assert done != f"iter_{ITERS:08d}"  # stopped before the end

    p = _torchrun(data, small_model, run, "--iters", str(ITERS), "--val-every", "2", "--resume")
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    assert f"resuming at iteration {int(done.removeprefix('iter_'))}" in err and "2 ranks × 1 × 32x32" in err
    assert out.count(f"{run.name}/model") == 1  # rank 0 alone reports the model it wrote
    ours, ref = _curve(run), _curve(one)  # 2 ranks × batch 1, killed and resumed = 1 process × batch 2
    assert [r[0] for r in ours] == list(range(1, ITERS + 1)) and [r[2] for r in ours] == [r[2] for r in ref]
    np.testing.assert_allclose([r[1] for r in ours], [r[1] for r in ref], rtol=5e-4)  # rounding only
    a, b = load_file(run / "model" / "model.safetensors"), load_file(one / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:  # BatchNorm running statistics included: SyncBatchNorm kept the global batch's (per-rank
        # statistics of batch 1 would be tens of % off; two ranks' sums round otherwise: 2.5e-4 on AVX2)
        np.testing.assert_allclose(a[k].float().numpy(), b[k].float().numpy(), rtol=1e-3, atol=1e-3, err_msg=k)
    state = json.loads((run / "checkpoints" / f"iter_{ITERS:08d}" / "state.json").read_text())
    assert state["settings"]["ranks"] == 2 and len(state["rank_rng"]) == 2


def _ray_worker(deadline: float) -> int:
    """The pid of a Ray Train worker process (its title names the actor)."""
    while time.monotonic() < deadline:
        for proc in Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and b"RayTrainWorker" in (proc / "cmdline").read_bytes():
                    return int(proc.name)
            except OSError:
                continue
        time.sleep(0.05)
    raise AssertionError("no Ray Train worker")


@pytest.mark.slow
@pytest.mark.ray
def test_ray_train_follows_the_curve_and_survives_a_killed_worker(small_model, one_process, tmp_path):
    """`segcli train --ray` on a real local Ray, 2 CPU workers (Ray Train's TorchTrainer): a worker SIGKILLed
    after the first checkpoint fails the attempt, FailureConfig starts the workers again, they resume from
    RUN's checkpoint, and the whole run is the one-process curve."""
    pytest.importorskip("ray.train", reason="Ray Train is not installed (the [ray] extra)")
    data, one = one_process
    run = tmp_path / "ray"
    launcher = [sys.executable, "-m"]
    extra = ("--iters", str(ITERS), "--val-every", "2", "--ray", "--ray-workers", "2", "--max-failures", "1")
    p = _train(launcher, data, small_model, run, *extra)
    deadline = time.monotonic() + 400
    while not (run / "checkpoints" / "latest").exists():
        assert p.poll() is None and time.monotonic() < deadline, p.communicate()[1][-3000:]
        time.sleep(0.01)
    victim = _ray_worker(deadline)
    os.kill(victim, signal.SIGSTOP)
    os.kill(victim, signal.SIGKILL)
    done = (run / "checkpoints" / "latest").read_text()
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
    assert f"resumed at iteration {int(done.removeprefix('iter_'))} from {done}" in err  # the restart, said
    assert "iteration 6: loss" in err  # the driver's progress, from RUN/log.jsonl
    ours, ref = _curve(run), _curve(one)
    assert [r[0] for r in ours] == list(range(1, ITERS + 1)), ours
    np.testing.assert_allclose([r[1] for r in ours], [r[1] for r in ref], rtol=5e-4)  # rounding only
    assert (run / "model" / "model.safetensors").is_file()


def test_one_image_per_step_through_the_pyramid_pooling_is_refused_by_name(small_model, tmp_path):
    """torch's BatchNorm cannot normalise the PPM's 1×1 bin over one image: one line naming --batch."""
    from segcli.errors import UsageError

    data = dataset(tmp_path / "data", 2)
    with pytest.raises(UsageError, match="--batch 1: the BatchNorm after the pyramid pooling") as e:
        fit(data, str(small_model), tmp_path / "run", iters=1, batch=1, **COMMON)
    assert "--batch 2 or more" in e.value.hint


def test_a_stop_asked_on_the_ray_driver_stops_the_workers_after_a_step(small_model, tmp_path):
    """The driver's Ctrl-C becomes RUN/.stop-requested (said once); a worker that sees it stops after its
    step with a checkpoint — the `--ray` path's worker and watcher, without a cluster."""
    from segcli.train import on_ray
    from segcli.train.options import Events
    from segcli.train.run import RunFolder

    run = tmp_path / "run"
    run.mkdir()
    said: list[str] = []
    watch = on_ray._Tail(RunFolder(run), Events(say=said.append, should_stop=lambda: True), every=0.01)
    watch.start()
    deadline = time.monotonic() + 10
    while not (run / on_ray.STOP).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    watch.stop()
    assert (run / on_ray.STOP).exists() and sum("stopping after the current iteration" in s for s in said) == 1

    data = dataset(tmp_path / "data", 2)
    options = dict(iters=4, batch=2, val_every=100, **COMMON)
    on_ray._loop({"data": str(data), "model": str(small_model), "out": str(run), "options": options})
    assert [r[0] for r in _curve(run)] == [1] and (run / "checkpoints" / "latest").read_text() == "iter_00000001"
