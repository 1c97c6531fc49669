"""Opt-in (`pytest -m hub`): the real openmmlab checkpoints from the Hub reproduce transformers' published
logits on ADE_val_00000001 (preset hf; logits[0, :3, :3] at 512×512, before resizing back)."""

from __future__ import annotations

import os

import pytest
import torch
from helpers import ORIGINAL_ENV

from segcli import Segmenter
from segcli.engine.resample import resize_pil
from segcli.io.images import load_image

pytestmark = pytest.mark.hub

GOLDEN = {  # transformers' tests / conversion scripts for these repositories
    "upernet-convnext-tiny": [[-8.8110, -8.8110, -8.6521], [-8.8110, -8.8110, -8.6521], [-8.7746, -8.7746, -8.6130]],
    "upernet-swin-tiny": [[-7.5958, -7.5958, -7.4302], [-7.5958, -7.5958, -7.4302], [-7.4797, -7.4797, -7.3068]],
}


@pytest.fixture()
def real_env(monkeypatch):
    for key in ("HF_HOME", "HF_HUB_CACHE", "HF_ENDPOINT", "HF_TOKEN", "HF_HUB_OFFLINE", "SEGCLI_CACHE"):
        if key in ORIGINAL_ENV:
            monkeypatch.setenv(key, ORIGINAL_ENV[key])
        else:
            monkeypatch.delenv(key, raising=False)


@pytest.fixture()
def ade_val_1(real_env) -> str:
    from huggingface_hub import hf_hub_download

    return hf_hub_download("hf-internal-testing/fixtures_ade20k", "ADE_val_00000001.jpg", repo_type="dataset")


@pytest.mark.parametrize("name", list(GOLDEN))
def test_golden_logits(name, ade_val_1):
    seg = Segmenter.from_pretrained(name)
    assert seg.info.origin.sha256 and len(seg.info.origin.sha256) == 64
    print(f"\n{name}: sha256 {seg.info.origin.sha256} ({os.path.getsize(ade_val_1)} byte image)")
    rgb = load_image(ade_val_1)  # the 512×512 logits: the hf preset on the image already resized to 512×512
    logits = seg.logits(resize_pil(rgb, (512, 512)), "hf")
    torch.testing.assert_close(logits[0, :3, :3], torch.tensor(GOLDEN[name]), rtol=0, atol=1e-4)
