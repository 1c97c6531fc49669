"""Parity with transformers 4.57.6 UperNetForSemanticSegmentation at the real checkpoint sizes.

Random weights with randomised norms, BatchNorm statistics, layer scales and relative-position biases are
saved with `save_pretrained(safe_serialization=True)` — the openmmlab Hub layout — and loaded back through
`Segmenter.from_pretrained`. Logits must agree within 1e-4 (fp32), on a preprocessed tensor and end to end
from a non-square image file through each side's own preprocessing.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
from helpers import (
    hf_convnext,
    hf_logits_from_file,
    hf_swin,
    random_image,
    randomize_,
    reference_keys,
    save_hf_dir,
)
from PIL import Image

from segcli import Segmenter

ATOL = 1e-4

REAL = {
    "upernet-convnext-tiny": lambda: hf_convnext((3, 3, 9, 3), (96, 192, 384, 768), aux_in=384),
    "upernet-swin-tiny": lambda: hf_swin(96, (2, 2, 6, 2), (3, 6, 12, 24), 7, aux_in=384),
    "upernet-swin-base": lambda: hf_swin(128, (2, 2, 18, 2), (4, 8, 16, 32), 12, aux_in=512),
}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=list(REAL))
def pair(request, tmp_path_factory):
    name = request.param
    torch.manual_seed(0)
    ref = randomize_(REAL[name](), seed=zlib.crc32(name.encode()) % 1000)  # stable across processes
    path = save_hf_dir(ref, tmp_path_factory.mktemp(name))
    seg = Segmenter.from_pretrained(path)
    return name, ref, seg, path


def _report(name: str, what: str, a: torch.Tensor, b: torch.Tensor) -> float:
    diff = (a - b).abs().max().item()
    print(f"\nPARITY {name} {what}: max|diff|={diff:.3e} (logit range {a.min():.2f}..{a.max():.2f})")
    return diff


def test_saved_layout_is_the_hub_layout(pair):
    """The reference writer produces exactly the key list of the real Hub checkpoint (shared/reference)."""
    name, _, _, path = pair
    from safetensors import safe_open

    expected, _ = reference_keys(name)
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        saved = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 - safe_open is not a mapping
    assert saved == {k: shape for k, (shape, _) in expected.items()}


def test_logits_on_tensor(pair):
    name, ref, seg, _ = pair
    x = torch.randn(1, 3, 300, 418, generator=torch.Generator().manual_seed(3))  # non-square, not /32
    with torch.no_grad():
        a = ref(x).logits
        b = seg.model(x)
    assert a.shape == b.shape == (1, 150, 300, 418)
    assert a.std() > 0.1 and len(a.argmax(1).unique()) > 3  # a non-degenerate random model
    assert _report(name, "tensor 300x418", a, b) <= ATOL


def test_auxiliary_head_on_tensor(pair):
    name, ref, seg, _ = pair
    x = torch.randn(1, 3, 256, 320, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        features = ref.backbone(x).feature_maps
        a = torch.nn.functional.interpolate(ref.auxiliary_head(features), size=(256, 320), mode="bilinear")
        b = seg.model.forward_aux(x)
    assert _report(name, "auxiliary head", a, b) <= ATOL


def test_end_to_end_from_image_file(pair, tmp_path):
    name, ref, seg, _ = pair
    path = tmp_path / "photo.png"
    Image.fromarray(random_image(333, 517, seed=5)).save(path)
    a = hf_logits_from_file(ref, path)
    b = seg.logits(path, preset="hf")
    assert b.shape == a.shape == (150, 333, 517) and b.dtype == torch.float32
    assert _report(name, "end-to-end 333x517 file, preset hf", a, b) <= ATOL
    labels = seg.predict(path, preset="hf")
    agree = (labels == a.argmax(0).numpy()).mean()
    assert agree > 0.999, agree  # ties at float precision may flip a handful of pixels
    assert np.array_equal(labels, b.argmax(0).numpy())
