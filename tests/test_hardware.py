"""`--dtype auto`: bfloat16 only where the hardware computes it natively, for the families that keep their
labels; float32 everywhere else, and what was picked is in the JSON and the fingerprint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segcli import Segmenter
from segcli.backends import hardware

CPU = torch.device("cpu")


@pytest.fixture()
def bf16_cpu(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))


@pytest.fixture()
def plain_cpu(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))


def test_auto_picks_bfloat16_only_on_native_hardware_for_families_that_keep_their_labels(bf16_cpu):
    # labels kept on the trained reference models (benchmarks/reference_models.py): all above the 99.5 % bar
    assert hardware.auto_dtype(CPU, "resnet") == torch.bfloat16  # 99.980 %
    assert hardware.auto_dtype(CPU, "convnext") == torch.bfloat16  # 99.993 %
    assert hardware.auto_dtype(CPU, "swin") == torch.bfloat16  # 99.993 %
    assert hardware.auto_dtype(CPU, "mit") == torch.float32  # a family nobody measured
    assert hardware.auto_dtype(CPU, None) == torch.float32  # an ONNX export runs as exported
    assert hardware.auto_dtype(torch.device("mps"), "resnet") == torch.float32


def test_auto_is_float32_without_bf16_instructions(plain_cpu, tiny_upp_dir):
    assert hardware.auto_dtype(CPU, "resnet") == torch.float32
    seg = Segmenter.from_pretrained(tiny_upp_dir, dtype="auto")
    assert seg.dtype == torch.float32 and seg.runtime["dtype"] == "float32"


def test_from_pretrained_auto_loads_bfloat16_on_a_bf16_cpu(bf16_cpu, tiny_upp_dir, tiny_convnext_dir):
    seg = Segmenter.from_pretrained(tiny_upp_dir, dtype="auto")  # a ResNet
    assert seg.dtype == torch.bfloat16 and seg.runtime["dtype"] == "bfloat16"
    assert Segmenter.from_pretrained(tiny_upp_dir).dtype == torch.float32  # the API default stays float32
    assert Segmenter.from_pretrained(tiny_convnext_dir, dtype="auto").dtype == torch.bfloat16


@pytest.mark.slow  # two real segcli processes
def test_cli_default_dtype_follows_this_machine(tiny_upp_dir, tmp_path, monkeypatch):
    """A ResNet model (the family that keeps its labels in bfloat16) runs bfloat16 by default exactly where the
    CPU computes it natively."""
    flags = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("flags")).split()
    expected = "bfloat16" if {"avx512_bf16", "amx_bf16"} & set(flags) else "float32"
    monkeypatch.delenv("SEGCLI_DTYPE")
    Image.fromarray(np.full((40, 50, 3), 120, dtype=np.uint8)).save(tmp_path / "a.png")
    cmd = [sys.executable, "-m", "segcli", "predict", str(tmp_path / "a.png"), "-o", str(tmp_path / "out")]
    r = subprocess.run([*cmd, "-m", str(tiny_upp_dir), "-q"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "out" / "a.json").read_text())["inference"]["dtype"] == expected
    again = subprocess.run([*cmd, "-m", str(tiny_upp_dir), "--dtype", "float32"], capture_output=True, text=True)
    assert ("0 done, 1 skipped" in again.stderr) == (expected == "float32")  # the fingerprint has the dtype
