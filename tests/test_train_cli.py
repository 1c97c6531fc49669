"""`segcli train` as a user runs it (real processes, a real loader worker): JSON log lines, RUN/model that
`segcli predict` runs with the trained classes, Ctrl-C saves and exits 130, and a run killed with kill -9
then resumed has the uninterrupted run's loss curve."""

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
from PIL import Image
from test_train import COLOURS, NAMES, dataset

pytestmark = pytest.mark.slow  # processes that train


def segcli(*args: object, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "segcli", *map(str, args)], capture_output=True, text=True, **kw)


@pytest.fixture()
def setup(tmp_path, small_model):
    classes = tmp_path / "classes.csv"
    classes.write_text("".join(f"{n},{r},{g},{b}\n" for n, (r, g, b) in zip(NAMES, COLOURS, strict=True)))
    data = dataset(tmp_path / "data", 8)
    small = ["--classes", classes, "--crop", "32", "--batch", "2", "--lr", "1e-3", "--workers", "1"]
    return data, ["-m", small_model, *small]


def _curve(run: Path) -> list[tuple]:
    lines = (run / "log.jsonl").read_text().splitlines()
    return [(r["iter"], r["total"], r["lr"]) for r in map(json.loads, lines) if "total" in r]


def test_train_then_predict_with_the_trained_model(setup, tmp_path):
    data, args = setup
    r = segcli(
        "train",
        data,
        *args,
        "-o",
        tmp_path / "run",
        "--iters",
        "6",
        "--val-split",
        "0.25",
        "--val-every",
        "3",
        "--jsonl",
    )
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["iter"] for x in records if "val_mIoU" in x] == [3, 6]
    assert [x["iter"] for x in records if "total" in x] == [6]  # every 10 iterations, and the last
    assert "data: 6 training and 2 validation pairs" in r.stderr
    photo = tmp_path / "p.png"
    Image.fromarray(np.full((40, 40, 3), COLOURS[1], dtype=np.uint8)).save(photo)
    p = segcli("predict", photo, "-m", tmp_path / "run" / "model", "-o", tmp_path / "out", "--save", "json")
    assert p.returncode == 0, p.stderr
    doc = json.loads((tmp_path / "out" / "p.json").read_text())
    assert {c["name"] for c in doc["classes"]} <= set(NAMES)


def test_kill_9_then_resume_has_the_uninterrupted_curve(setup, tmp_path):
    data, args = setup
    common = ["train", data, *args, "--iters", "12", "--val-every", "3", "--log-every", "1"]
    whole = segcli(*common, "-o", tmp_path / "whole", "-q")
    assert whole.returncode == 0, whole.stderr

    run = tmp_path / "parts"
    proc = subprocess.Popen([sys.executable, "-m", "segcli", *map(str, common), "-o", str(run), "-q"])
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        latest = run / "checkpoints" / "latest"
        if latest.exists() and latest.read_text() >= "iter_00000003":
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    again = segcli(*common, "-o", run, "-q", "--resume")
    assert again.returncode == 0, again.stderr
    assert _curve(run) == _curve(tmp_path / "whole") and len(_curve(run)) == 12


def test_ctrl_c_saves_a_checkpoint_and_exits_130(setup, tmp_path):
    data, args = setup
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "segcli",
        "train",
        *map(str, [data, *args]),
        "-o",
        str(run),
        "--iters",
        "500",
        "--jsonl",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first = json.loads(proc.stdout.readline())  # training has started
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "add --resume to continue" in stderr and first["iter"] >= 1
    step = int((run / "checkpoints" / "latest").read_text().removeprefix("iter_"))
    assert 1 <= step < 500 and "Traceback" not in stderr
