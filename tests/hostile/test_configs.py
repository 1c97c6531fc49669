"""Untrusted configuration and weights: config.json values, registries, shard indexes, ONNX files, NaN
weights, a forged hash cache — each one line naming the file and an exit code, fast."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from helpers import no_hang, photo

from segcli import Segmenter
from segcli.errors import CheckpointError, ConfigError


def _edit(cfg: dict, path: str, value) -> None:
    keys = path.split(".")
    for k in keys[:-1]:
        cfg = cfg[k]
    cfg[keys[-1]] = value


CONFIG_CASES = [
    ("config.json", "num_labels", 10**9, "num_labels"),
    ("config.json", "id2label", None, "num_labels"),  # with num_labels 10**9 below
    ("config.json", "backbone_config.depths", [1, 1, 1, 1000000], "backbone_config.depths[3]"),
    ("config.json", "pool_scales", [100000], "pool_scales[0]"),
    ("config.json", "hidden_size", -1, "hidden_size"),
    ("config.json", "hidden_size", "512", "hidden_size"),
    ("config.json", "backbone_config.hidden_sizes", [16, 24, 32, 10**7], "backbone_config.hidden_sizes[3]"),
    ("config.json", "palette", [[0, 0, 300]] * 150, "palette[0][2]"),
    ("preprocessor_config.json", "size", {"height": 100000, "width": 100000}, "size.height"),
    ("preprocessor_config.json", "size", {"height": -5, "width": 5}, "size.height"),
    ("preprocessor_config.json", "size", "large", "size"),
    ("preprocessor_config.json", "image_std", [0.0, 0.2, 0.2], "image_std[0]"),
    ("preprocessor_config.json", "image_mean", [float("nan")] * 3, None),  # NaN is not JSON: unreadable file
]


@pytest.mark.parametrize("file, key, value, named", CONFIG_CASES)
def test_config_values_are_bounded(model, file, key, value, named):
    cfg = json.loads((model / file).read_text())
    _edit(cfg, key, value)
    if key == "id2label":
        cfg["num_labels"] = 10**9
    (model / file).write_text(json.dumps(cfg))
    with no_hang(60), pytest.raises(ConfigError) as e:
        Segmenter.from_pretrained(model)
    msg = str(e.value)
    assert file in msg and "\n" not in msg
    if named:
        assert f"`{named}`" in msg


def test_deeply_nested_and_huge_configs(model):
    (model / "config.json").write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(ConfigError, match=r"config\.json: not a readable JSON file"):
        Segmenter.from_pretrained(model)
    with open(model / "config.json", "wb") as f:
        f.truncate(40 << 20)  # sparse: 40 MB of zeros
    with pytest.raises(ConfigError, match="more than the"):
        Segmenter.from_pretrained(model)


def test_swin_heads_must_divide_widths(tiny_swin_dir, tmp_path):
    d = Path(shutil.copytree(tiny_swin_dir, tmp_path / "swin"))
    cfg = json.loads((d / "config.json").read_text())
    cfg["backbone_config"]["num_heads"] = [3, 2, 2, 4]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"config\.json: Swin: stage width 16 is not divisible by its 3"):
        Segmenter.from_pretrained(d)


REGISTRY = """schema = 1
[models.{name}]
{field}
license = "MIT"
dataset = "ade20k"
backbone = {{ type = "convnext", depths = [1, 1, 2, 1], widths = [16, 24, 32, 40] }}
crop_size = {crop}
preset = "hf"
"""


@pytest.mark.parametrize(
    "name, field, crop, message",
    [
        ("..", 'repo = "a/b"\nfilename = "model.safetensors"', 512, "model name '..' is not allowed"),
        ("a/b", 'repo = "a/b"\nfilename = "model.safetensors"', 512, "is not allowed"),
        ("ok", 'repo = "../etc"\nfilename = "model.safetensors"', 512, "`repo`"),
        ("ok", 'repo = "a/.."\nfilename = "model.safetensors"', 512, "`repo`"),
        ("ok", 'repo = "a/b"\nfilename = "../../etc/passwd"', 512, "`filename`"),
        ("ok", 'url = "ftp://host/x.pth"', 512, "`url`"),
        ("ok", 'repo = "a/b"\nfilename = "model.safetensors"', 10**9, "`crop_size`"),
        ("ok", 'repo = "a/b"\nfilename = "model.safetensors"', -1, "`crop_size`"),
    ],
)
def test_registry_entries_are_checked(cli, tmp_path, name, field, crop, message):
    reg = tmp_path / "reg.toml"
    reg.write_text(REGISTRY.format(name=f'"{name}"' if "/" in name or "." in name else name, field=field, crop=crop))
    r = cli("--registry", reg, "models")
    assert r.exit_code == 2 and message in r.stderr and str(reg) in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_model_index_shards_must_stay_in_their_folder(model, tmp_path):
    (model / "model.safetensors").rename(model / "model-00001-of-00001.safetensors")
    index = {"weight_map": {"a": "../../outside.safetensors"}}
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="is not a file name in the index's folder"):
        Segmenter.from_pretrained(model)


def test_a_fifo_as_a_shard_does_not_hang(model):
    (model / "model.safetensors").unlink()
    os.mkfifo(model / "model-00001-of-00001.safetensors")
    index = {"weight_map": {"a": "model-00001-of-00001.safetensors"}}
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="not a regular file"):
        Segmenter.from_pretrained(model)


@pytest.mark.parametrize("content", [b"", b"\x08\x01\x12\x03abc" * 3, None])
def test_corrupt_onnx_files_are_one_line(cli, model, tmp_path, content):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the [onnx] extra)")
    onnx = tmp_path / "m.onnx"
    side = {
        "format": "segcli-export/1",
        "model_format": "onnx",
        "input": {
            "name": "input",
            "size": [64, 64],
            "normalization": {"mean": [0.5] * 3, "std": [0.2] * 3, "scale": 1},
        },
        "output": {"name": "logits"},
        "classes": ["a", "b"],
        "source": {},
    }
    (tmp_path / "m.onnx.json").write_text(json.dumps(side))
    onnx.write_bytes(content if content is not None else b"\x00" * 10)
    photo(tmp_path / "x.png")
    r = cli("predict", tmp_path / "x.png", "-m", onnx, "-o", tmp_path / "out")
    assert r.exit_code == 2 and "not a loadable ONNX model" in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_nan_weights_and_constant_logits_are_model_errors(cli, model, tmp_path):
    from safetensors.torch import load_file, save_file

    tensors = load_file(model / "model.safetensors")
    broken = dict(tensors, **{"decode_head.classifier.weight": tensors["decode_head.classifier.weight"] * float("nan")})
    save_file(broken, model / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="NaN or infinite values"):
        Segmenter.from_pretrained(model)
    flat = dict(tensors, **{"decode_head.classifier.weight": tensors["decode_head.classifier.weight"] * 0})
    flat["decode_head.classifier.bias"] = tensors["decode_head.classifier.bias"] * 0
    save_file(flat, model / "model.safetensors", metadata={"format": "pt"})
    for i in range(5):
        photo(tmp_path / "in" / f"{i}.png", seed=i)
    r = cli("predict", tmp_path / "in", "-m", model, "-o", tmp_path / "out")
    # each image fails alone; three in a row with none good before them stop the run as a model error
    assert r.exit_code == 2 and "the same logit for every class" in r.stderr and "(the first 3 images)" in r.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["counts"]["failed"] == 3 and summary["counts"]["done"] == 0


def test_hash_cache_is_data_not_truth(model, monkeypatch, tmp_path):
    from segcli.loading import hub

    weights = model / "model.safetensors"
    first = hub.file_sha256(weights)
    stamps = json.loads(hub._stamp_file().read_text())
    stamps = dict.fromkeys(stamps, 12345) | {"x": ["not", "a", "digest"]}  # wrong types: ignored
    hub._stamp_file().write_text(json.dumps(stamps))
    assert hub.file_sha256(weights) == first
    st = weights.stat()
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, then the old mtime put back: only the ctime (and content) differ
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert hub.file_sha256(weights) != first


def test_unknown_field_names_are_shown_escaped(model):
    """A field name from the file is data: control characters and long names never reach the terminal raw."""
    cfg = json.loads((model / "config.json").read_text())
    cfg["segcli"] = {"\n\x1b[2J": 1, "x" * 500: 2, "ok_name": 3}
    (model / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError) as e:
        Segmenter.from_pretrained(model)
    text = str(e.value)
    assert "\n" not in text and "\x1b" not in text and "x" * 100 not in text and "ok_name" in text
