"""Every registry entry builds a network whose state dict is exactly the real Hub checkpoint's key list.

The key lists (tests/data/checkpoint-keys, copied from the nine openmmlab repositories' layouts) give every
key, shape and dtype; the parameter totals in their headers were counted from the reference model.
"""

from __future__ import annotations

import pytest
import torch
from helpers import reference_keys

from segcli.loading.checkpoint import match_state_dict
from segcli.loading.registry import load_registry
from segcli.model import Segmentor, network_size

NINE = [
    "upernet-convnext-tiny",
    "upernet-convnext-small",
    "upernet-convnext-base",
    "upernet-convnext-large",
    "upernet-convnext-xlarge",
    "upernet-swin-tiny",
    "upernet-swin-small",
    "upernet-swin-base",
    "upernet-swin-large",
]

DTYPES = {"float32": torch.float32, "int64": torch.int64}


def test_registry_has_the_nine_checkpoints():
    specs = load_registry()
    assert sorted(NINE) == sorted(n for n, s in specs.items() if s.repo is not None)
    for name in NINE:
        spec = specs[name]
        assert spec.repo == f"openmmlab/{name}" and spec.filename == "model.safetensors"
        assert spec.revision in ("main", "refs/pr/1") and spec.license == "MIT" and spec.dataset == "ade20k"
        assert spec.miou is not None and spec.miou_ms is not None and spec.miou < spec.miou_ms


@pytest.mark.parametrize("name", NINE)
def test_state_dict_is_the_hub_layout(name):
    expected, totals = reference_keys(name)
    with torch.device("meta"):
        model = Segmentor(load_registry()[name].network)
    ours = {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
    assert sorted(ours) == sorted(expected)
    for key, (shape, dtype) in expected.items():
        assert ours[key] == (shape, DTYPES[dtype]), key
    params, nbytes = network_size(load_registry()[name].network)
    assert params == totals["total"]
    assert nbytes == totals["fp32_bytes"]


@pytest.mark.parametrize("name", ["upernet-convnext-tiny", "upernet-swin-base"])
def test_hub_key_list_passes_the_strict_check(name):
    """A state dict shaped exactly like the Hub file is accepted by the strict matcher, and one key less
    (or more) is not — the matcher is what `from_pretrained` runs on real downloads."""
    expected, _ = reference_keys(name)
    tensors = {k: torch.zeros(shape, dtype=DTYPES[dt]) for k, (shape, dt) in expected.items()}
    with torch.device("meta"):
        model = Segmentor(load_registry()[name].network)
    for key in [k for k in tensors if k.endswith("relative_position_index")]:
        tensors[key] = model.state_dict()[key].clone()
    assert set(match_state_dict(model, tensors, name)) == set(expected)
    from segcli.errors import CheckpointError

    with pytest.raises(CheckpointError, match="1 missing"):
        match_state_dict(model, {k: v for k, v in tensors.items() if k != "decode_head.classifier.bias"}, name)
