"""Strict loading: every key and shape accounted for; unreadable files are one-line errors naming them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import randomize_, save_hf_dir, tiny_convnext
from safetensors.torch import load_file, save_file

from segcli import Segmenter
from segcli.errors import CheckpointError
from segcli.loading.checkpoint import SHOW


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _rewrite(path: Path, edit) -> None:
    tensors = load_file(path / "model.safetensors")
    edit(tensors)
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})


def _one_line(err: CheckpointError) -> str:
    text = str(err)
    assert "\n" not in text
    return text


def test_missing_keys_are_listed_sorted(tiny_convnext_dir, tmp_path):
    d = _copy(tiny_convnext_dir, tmp_path / "m")
    gone = ["decode_head.fpn_bottleneck.conv.weight", "backbone.embeddings.layernorm.bias"]
    _rewrite(d, lambda t: [t.pop(k) for k in gone])
    with pytest.raises(CheckpointError) as e:
        Segmenter.from_pretrained(d)
    msg = _one_line(e.value)
    assert str(d / "model.safetensors") in msg and "2 missing" in msg
    assert f"missing: {sorted(gone)[0]}, {sorted(gone)[1]}" in msg


def test_unexpected_keys_and_shape_conflicts(tiny_convnext_dir, tmp_path):
    d = _copy(tiny_convnext_dir, tmp_path / "m")

    def edit(t):
        t["decode_head.extra.weight"] = torch.zeros(3)
        t["decode_head.classifier.bias"] = torch.zeros(151)

    _rewrite(d, edit)
    with pytest.raises(CheckpointError) as e:
        Segmenter.from_pretrained(d)
    msg = _one_line(e.value)
    assert "1 unexpected" in msg and "unexpected: decode_head.extra.weight" in msg
    assert "decode_head.classifier.bias file [151] vs model [150]" in msg


def test_long_lists_are_capped(tiny_convnext_dir, tmp_path):
    d = _copy(tiny_convnext_dir, tmp_path / "m")
    doomed = []

    def edit(t):
        bn = [k for k in t if k.startswith("decode_head.") and "batch_norm" in k and "num_batches" not in k]
        doomed.extend(sorted(bn)[: SHOW + 5])
        for k in doomed:
            t.pop(k)

    _rewrite(d, edit)
    with pytest.raises(CheckpointError) as e:
        Segmenter.from_pretrained(d)
    msg = _one_line(e.value)
    assert f"{SHOW + 5} missing" in msg and "… and 5 more" in msg
    assert doomed[SHOW - 1] in msg and doomed[SHOW] not in msg


@pytest.mark.parametrize("cut", [0.5, 0.01])
def test_truncated_file_is_one_line_naming_the_file(tiny_convnext_dir, tmp_path, cut):
    d = _copy(tiny_convnext_dir, tmp_path / "m")
    f = d / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: max(9, int(len(data) * cut))])
    with pytest.raises(CheckpointError) as e:
        Segmenter.from_pretrained(d)
    msg = _one_line(e.value)
    assert msg.startswith(f"{f}: not a readable safetensors file")


def test_not_safetensors_and_pickles_are_refused(tiny_convnext_dir, tmp_path):
    d = _copy(tiny_convnext_dir, tmp_path / "m")
    (d / "model.safetensors").write_text("this is not a checkpoint at all " * 10)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        Segmenter.from_pretrained(d)
    torch.save({"state_dict": {}}, d / "model.safetensors")  # a zip pickle under the wrong name
    with pytest.raises(CheckpointError, match=r"pickled PyTorch checkpoint.*never unpickles"):
        Segmenter.from_pretrained(d)
    (d / "model.safetensors").unlink()
    torch.save({}, d / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin but no model\.safetensors"):
        Segmenter.from_pretrained(d)


def test_derived_buffers_may_be_absent(tiny_swin_dir, tmp_path):
    """relative_position_index and num_batches_tracked are computed when a writer left them out."""
    d = _copy(tiny_swin_dir, tmp_path / "m")
    full = Segmenter.from_pretrained(tiny_swin_dir)

    def edit(t):
        for k in [k for k in t if k.endswith(("relative_position_index", "num_batches_tracked"))]:
            t.pop(k)

    _rewrite(d, edit)
    stripped = Segmenter.from_pretrained(d)
    assert stripped.model.backbone.encoder.layers[0].blocks[0].attention.self.relative_position_index.shape == (49, 49)
    x = torch.randn(1, 3, 96, 80)
    with torch.no_grad():  # not bit-equal: kernels may pick other paths for differently aligned weights
        torch.testing.assert_close(full.model(x), stripped.model(x), rtol=0, atol=1e-5)


def test_relative_position_index_for_another_window_is_refused(tiny_swin_dir, tmp_path):
    d = _copy(tiny_swin_dir, tmp_path / "m")
    key = "backbone.encoder.layers.0.blocks.0.attention.self.relative_position_index"
    _rewrite(d, lambda t: t.__setitem__(key, t[key].flip(0).contiguous()))
    with pytest.raises(CheckpointError, match="relative_position_index for another window size"):
        Segmenter.from_pretrained(d)


def test_auxiliary_head_rule(tmp_path):
    """The aux head is part of the model iff config.json says use_auxiliary_head (default true)."""
    ref = randomize_(tiny_convnext(), seed=3)
    d = save_hf_dir(ref, tmp_path / "with-aux")
    seg = Segmenter.from_pretrained(d)
    w = load_file(d / "model.safetensors")["auxiliary_head.classifier.weight"]
    assert torch.equal(seg.model.auxiliary_head.classifier.weight, w)  # loaded, not dropped

    # weights without the aux head but a config that wants one: missing keys
    _rewrite(d, lambda t: [t.pop(k) for k in [k for k in t if k.startswith("auxiliary_head.")]])
    with pytest.raises(CheckpointError, match=r"missing: auxiliary_head\."):
        Segmenter.from_pretrained(d)

    # config without an aux head: the same file loads, and the model has none
    cfg = json.loads((d / "config.json").read_text())
    cfg["use_auxiliary_head"] = False
    (d / "config.json").write_text(json.dumps(cfg))
    assert Segmenter.from_pretrained(d).model.auxiliary_head is None

    # config without an aux head but weights with one: unexpected keys
    shutil.copy(tmp_path / "with-aux" / "config.json", tmp_path / "cfg-backup.json")
    d2 = save_hf_dir(ref, tmp_path / "aux-in-file")
    (d2 / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"unexpected: auxiliary_head\."):
        Segmenter.from_pretrained(d2)


def test_fp16_file_loads_into_float32(tiny_convnext_dir, tmp_path):
    d = _copy(tiny_convnext_dir, tmp_path / "m")
    _rewrite(d, lambda t: t.update({k: v.half() for k, v in t.items() if v.is_floating_point()}))
    seg = Segmenter.from_pretrained(d)
    ref = load_file(tiny_convnext_dir / "model.safetensors")
    w = seg.model.decode_head.classifier.weight
    assert w.dtype == torch.float32
    assert torch.equal(w, ref["decode_head.classifier.weight"].half().float())


def test_sharded_checkpoint(tiny_convnext_dir, tmp_path):
    d = _copy(tiny_convnext_dir, tmp_path / "m")
    tensors = load_file(d / "model.safetensors")
    keys = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for name, ks in shards.items():
        save_file({k: tensors[k] for k in ks}, d / name, metadata={"format": "pt"})
    (d / "model.safetensors").unlink()
    weight_map = {k: name for name, ks in shards.items() for k in ks}
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    seg = Segmenter.from_pretrained(d)
    full = Segmenter.from_pretrained(tiny_convnext_dir)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(seg.model(x), full.model(x), rtol=0, atol=1e-5)


def test_header_length_starting_with_0x80_is_not_mistaken_for_a_pickle(tmp_path):
    """A valid safetensors file whose little-endian header length begins with bytes 80 02 still loads."""
    from segcli.loading.checkpoint import read_safetensors

    for pad in range(1200):
        f = tmp_path / "w.safetensors"
        save_file({"x": torch.arange(3.0)}, f, metadata={"pad": "p" * pad})
        if f.read_bytes()[:2] == b"\x80\x02":
            break
    else:
        pytest.skip("no metadata padding produced a header length of 0x02XX80")
    assert torch.equal(read_safetensors(f)["x"], torch.arange(3.0))
