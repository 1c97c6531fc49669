"""Resources a small file can ask for: a checkpoint declaring 65536 classes (64 GiB of logits per 512²
view), an image whose windows' values do not fit, an export check of thousands of classes. The memory is
estimated before anything runs and refused by name (the class count and the view size), never an
allocation traceback or the OOM killer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import no_hang, photo, random_image, randomize_, save_hf_dir, tiny_convnext

from segcli import Segmenter
from segcli.engine import memory
from segcli.errors import UsageError

MiB = 1 << 20


@pytest.fixture(scope="module")
def huge_model(tmp_path_factory) -> Path:
    """The tiny ConvNeXt with 65536 classes (8 MB of weights)."""
    return save_hf_dir(randomize_(tiny_convnext(num_labels=65536)), tmp_path_factory.mktemp("huge"))


@pytest.mark.slow  # a CLI process
def test_a_model_whose_logits_cannot_fit_is_refused_before_any_image(huge_model, tmp_path):
    for i in range(3):
        photo(tmp_path / "in" / f"{i}.png", seed=i)
    with no_hang(120):
        r = subprocess.run(
            [sys.executable, "-m", "segcli", "predict", tmp_path / "in", "-m", huge_model, "-o", tmp_path / "out"],
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert r.returncode == 2, r.stderr  # the model's error: every image would fail alike
    assert "65536 classes × 512x512 views need about 192.0 GiB per forward pass" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not list((tmp_path / "out").glob("[0-9].png"))
    assert (tmp_path / "out" / "legend.png").stat().st_size < 2 * MiB  # the first 1024 classes


def test_an_image_too_large_for_the_memory_fails_alone(cli, tiny_convnext_dir, tmp_path, monkeypatch):
    photo(tmp_path / "in" / "small.png", 64, 64)
    photo(tmp_path / "in" / "wide.png", 64, 4000)
    monkeypatch.setattr(memory, "available", lambda device: 40 * MiB)  # a small machine
    slide = ["--mode", "slide", "--crop", "64", "--stride", "64", "--resize", "none", "--backend", "torch"]
    r = cli("predict", tmp_path / "in", "-m", tiny_convnext_dir, "-o", tmp_path / "out", *slide)
    assert r.exit_code == 1, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("segcli: error:")]
    assert len(errors) == 1 and "wide.png: a 4000x64 image with 150 classes × 64x64 views needs about" in errors[0]
    assert (tmp_path / "out" / "small.png").is_file() and not (tmp_path / "out" / "wide.png").exists()


def test_an_onnxruntime_export_that_cannot_fit_is_refused(tiny_convnext_dir, monkeypatch):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the [onnx] extra)")
    monkeypatch.setattr(memory, "available", lambda device: 512 * MiB)
    seg = Segmenter.from_pretrained(tiny_convnext_dir)
    with pytest.raises(
        UsageError, match=r"exporting to onnxruntime of 150 classes × 512x512 views needs about 0\.9 GiB"
    ):
        seg.use_backend("onnxruntime", "hf")


@pytest.mark.parametrize(
    "overrides, probs",
    [
        ({"mode": "slide", "crop": (48, 48), "stride": (32, 32), "resize": "none"}, False),
        ({"mode": "slide", "crop": (48, 48), "stride": (32, 32), "resize": "none", "flip": True}, True),
        ({"mode": "whole", "resize": "none", "scales": [0.75, 1.0, 1.5]}, False),
    ],
)
def test_the_estimate_covers_what_the_engine_holds(tiny_convnext_dir, overrides, probs):
    """The estimate (without the forward pass) is at least what the engine's accumulators and merge buffers
    held at their peak (their own count), so a refusal is never for less than a run needs."""
    seg = Segmenter.from_pretrained(tiny_convnext_dir)
    image = random_image(100, 150)
    result = seg.run(image, "mmseg", probs=probs, **overrides)
    e = memory.estimate(seg.model, result.params, [(100, 150)], probs=probs)
    held = result.held_elements * 4 + (150 * 100 * 150 * 2 if probs else 0)  # float32 sums, float16 output
    assert held <= e.total - e.per_pass, (held, e)
    assert e.total - e.per_pass < 4 * held + 4 * 150 * 100 * 150  # and not wildly more
    assert np.asarray(result.labels).shape == (100, 150)
