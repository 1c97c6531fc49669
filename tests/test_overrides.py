"""Overrides mean what they say, for every preset on every family: `flip=False`, one scale, `mode="whole"`
and `resize="none"` reduce any preset to one forward pass of the image as it is — compared here with the
network run directly — and `logits()` gives logits only where the computation has them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import random_image

from segcli import Segmenter
from segcli.engine.presets import PRESETS
from segcli.errors import UsageError

PLAIN = dict(resize="none", mode="whole", scales="1.0", flip=False)


@pytest.fixture(scope="module")
def models(tiny_convnext_dir, tiny_swin_dir, tiny_pspnet_dir, tiny_upp_dir):
    return {
        name: Segmenter.from_pretrained(path)
        for name, path in {
            "convnext": tiny_convnext_dir,
            "swin": tiny_swin_dir,
            "pspnet": tiny_pspnet_dir,
            "upp": tiny_upp_dir,
        }.items()
    }


def _direct(seg: Segmenter, image: np.ndarray) -> torch.Tensor:
    """The network on the image as it is: normalise, forward, the primary head's logits at the input size."""
    x = seg.network.normalize(torch.from_numpy(image).permute(2, 0, 1)[None].float())
    with torch.no_grad():
        out = seg.network(x)
    out = out[0] if isinstance(out, tuple) else out
    return out[0, : seg.num_classes]


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("family", ["convnext", "swin", "pspnet", "upp"])
def test_plain_overrides_reduce_every_preset_to_one_forward(models, family, preset):
    seg = models[family]
    image = random_image(70, 90, seed=3)
    params = seg.params(preset, **PLAIN)
    assert params.views == 1 and not params.window_flip and not params.window_softmax and params.averages is None
    torch.testing.assert_close(seg.logits(image, params), _direct(seg, image), rtol=0, atol=1e-4)


SMALL = {  # the presets at a small size: the same averaging, a fraction of the pixels
    "semseg": dict(resize="long:96", crop=65, stride=44),
    "semseg-ms": dict(resize="long:96", crop=65, stride=44, scales="0.5,1.0"),
    "mmseg-ms": dict(resize="64:256", scales="0.5,1.0"),
    "csail": dict(resize="64:256/8"),
    "upp": dict(resize="64:256/8"),
}


@pytest.mark.parametrize("preset", list(SMALL))
def test_what_averages_probabilities_has_no_logits(models, preset):
    seg = models["pspnet"]
    image = random_image(70, 90, seed=4)
    overrides = {k: v for k, v in SMALL[preset].items() if k not in ("crop", "stride")}
    if "crop" in SMALL[preset]:
        overrides.update(mode="slide", crop=SMALL[preset]["crop"], stride=SMALL[preset]["stride"])
    with pytest.raises(UsageError, match="averaged probabilities, not logits"):
        seg.logits(image, preset, **overrides)
    probs = seg.probs(image, preset, **overrides)
    assert probs.shape == (seg.num_classes, 70, 90)
    torch.testing.assert_close(probs.sum(0), torch.ones(70, 90), rtol=0, atol=1e-4)
    labels = seg.predict(image, preset, **overrides).astype(np.int64)
    assert torch.equal(probs.argmax(0), torch.from_numpy(labels))


def test_flip_false_turns_off_the_windows_mirrors_too(models):
    seg = models["pspnet"]
    semseg = seg.params("semseg")
    assert semseg.window_flip and not semseg.flip
    assert not seg.params("semseg", flip=False).window_flip
    whole = seg.params("semseg", mode="whole")  # a whole image: its mirror is a flipped view, no window softmax
    assert whole.flip and not whole.window_flip and not whole.window_softmax and not whole.window_pad
