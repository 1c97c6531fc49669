"""Model sources: registry files (built-in + user), config.json of fine-tuned models, resolution order."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import randomize_, save_hf_dir, tiny_convnext, tiny_swin

from segcli import Segmenter
from segcli.errors import CheckpointError, ConfigError, ModelNotFoundError
from segcli.loading.classes import derived_palette, known_set
from segcli.loading.registry import load_registry
from segcli.loading.sources import resolve

TINY_ENTRY = """
[models.tiny]
repo = "testorg/tiny-upernet"
revision = "main"
filename = "model.safetensors"
sha256 = ""
license = "MIT"
dataset = "ade20k"
backbone = {{ type = "convnext", depths = [1, 1, 2, 1], widths = [16, 24, 32, 40] }}
head = {{ channels = 32, aux_channels = 16 }}
crop_size = 512
preset = "hf"
{extra}
"""


def write_registry(path: Path, extra: str = "", body: str | None = None) -> Path:
    path.write_text("schema = 1\n" + (body if body is not None else TINY_ENTRY.format(extra=extra)))
    return path


def test_user_registry_adds_entries_from_flag_or_env(tmp_path, monkeypatch):
    reg = write_registry(tmp_path / "reg.toml")
    assert "tiny" in load_registry(reg) and "upernet-convnext-tiny" in load_registry(reg)
    assert "tiny" not in load_registry()
    monkeypatch.setenv("SEGCLI_REGISTRY", str(reg))
    spec = load_registry()["tiny"]
    assert spec.network.decode_head.channels == 32 and spec.network.auxiliary_head.in_channels == 32
    assert spec.sha256 is None and spec.registry_file == str(reg)


def test_user_registry_overrides_a_builtin_name(tmp_path):
    body = TINY_ENTRY.format(extra="").replace("[models.tiny]", "[models.upernet-convnext-tiny]")
    reg = write_registry(tmp_path / "reg.toml", body=body)
    assert load_registry(reg)["upernet-convnext-tiny"].repo == "testorg/tiny-upernet"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.replace('license = "MIT"\n', ""), r"missing field\(s\) license"),
        (lambda s: s + 'colour = "red"\n', r"unknown field\(s\) colour"),
        (lambda s: s.replace('sha256 = ""', 'sha256 = "abc"'), "sha256 must be 64 lowercase hex"),
        (lambda s: s.replace('type = "convnext"', 'type = "vit"'), "`backbone` needs type"),
        (lambda s: s.replace("widths =", "width ="), r"unknown backbone field\(s\) width"),
        (lambda s: s.replace("channels = 32", "chanels = 32"), r"unknown head field\(s\) chanels"),
        (lambda s: s.replace('dataset = "ade20k"', 'dataset = "coco"'), "not a bundled class set"),
        (lambda s: s.replace("[models.tiny]", "[models.tiny"), "not valid TOML"),
    ],
)
def test_registry_errors_name_the_file_and_entry(tmp_path, edit, message):
    reg = tmp_path / "reg.toml"
    reg.write_text(edit("schema = 1\n" + TINY_ENTRY.format(extra="")))
    with pytest.raises(ConfigError, match=message) as e:
        load_registry(reg)
    assert str(reg) in str(e.value)


def test_unreadable_user_registry(tmp_path):
    with pytest.raises(ConfigError, match="cannot read registry file"):
        load_registry(tmp_path / "missing.toml")


def test_unknown_model_suggests_close_names():
    with pytest.raises(ModelNotFoundError, match="unknown model 'upernet-convnext-tiy'") as e:
        resolve("upernet-convnext-tiy", load_registry())
    assert "upernet-convnext-tiny" in e.value.hint


def test_local_directory_wins_over_registry_name(tiny_convnext_dir, tmp_path, monkeypatch):
    shutil.copytree(tiny_convnext_dir, tmp_path / "upernet-convnext-tiny")
    monkeypatch.chdir(tmp_path)
    r = resolve("upernet-convnext-tiny", load_registry())  # no download: the folder of that name is used
    assert r.info.origin.kind == "local" and r.weights == Path("upernet-convnext-tiny/model.safetensors")


def test_weights_file_with_config_beside_it(tiny_convnext_dir):
    r = resolve(str(tiny_convnext_dir / "model.safetensors"), load_registry())
    assert r.info.origin.kind == "local" and r.info.origin.sha256 and len(r.info.origin.sha256) == 64


def test_directory_without_config(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"no config\.json"):
        Segmenter.from_pretrained(tmp_path)


def test_fine_tuned_model_with_its_own_classes(tmp_path):
    names = {0: "background", 1: "crack", 2: "spalling", 3: "rust", 4: "vegetation"}
    d = save_hf_dir(randomize_(tiny_swin(num_labels=5, id2label=names), seed=4), tmp_path / "ft")
    seg = Segmenter.from_pretrained(d)
    assert seg.classes == list(names.values()) and seg.num_classes == 5
    assert seg.palette.shape == (5, 3) and len({tuple(c) for c in seg.palette}) == 5
    assert np.array_equal(seg.palette, np.asarray(derived_palette(5), np.uint8))
    labels = seg.predict(np.zeros((40, 50, 3), np.uint8))
    assert labels.shape == (40, 50) and labels.max() < 5


def test_ade20k_model_gets_the_ade20k_palette(tiny_convnext_dir):
    seg = Segmenter.from_pretrained(tiny_convnext_dir)
    ade = known_set("ade20k")
    assert seg.classes == list(ade.classes) and seg.classes[7] == "bed "  # trailing space as on the Hub
    assert np.array_equal(seg.palette, ade.palette_array)
    assert tuple(seg.palette[6]) == tuple(seg.palette[48]) == (140, 140, 140)  # road and skyscraper


def test_palette_in_config_json_is_used(tmp_path):
    d = save_hf_dir(randomize_(tiny_convnext(num_labels=3, id2label={0: "a", 1: "b", 2: "c"})), tmp_path / "p")
    cfg = json.loads((d / "config.json").read_text())
    cfg["palette"] = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    (d / "config.json").write_text(json.dumps(cfg))
    assert Segmenter.from_pretrained(d).palette.tolist() == cfg["palette"]


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["backbone_config"].update(model_type="resnet"), "backbone model_type 'resnet' is not supported"),
        (lambda c: c.update(model_type="segformer"), "model_type 'segformer' is not supported"),
        (lambda c: c["backbone_config"].update(out_features=["stage4"]), "the auxiliary head reads the third"),
        (lambda c: c.update(id2label={"0": "a", "2": "b"}), "without gaps"),
        (lambda c: c["backbone_config"].update(hidden_act="prelu"), r"unsupported activation 'prelu' \(it has learned"),
        (
            lambda c: c["backbone_config"].update(hidden_act=""),
            r"config\.json: backbone_config\.hidden_act: unsupported activation ''",
        ),
        (
            lambda c: c["backbone_config"].update(num_channels=1),
            "config.json: ConvNeXt: 1 input channels; segcli feeds RGB",
        ),
    ],
)
def test_unsupported_configs_are_clear_errors(tiny_convnext_dir, tmp_path, edit, message):
    d = shutil.copytree(tiny_convnext_dir, tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    edit(cfg)
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=message):
        Segmenter.from_pretrained(d)


def test_broken_config_json_names_the_file(tiny_convnext_dir, tmp_path):
    d = shutil.copytree(tiny_convnext_dir, tmp_path / "m")
    (d / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"config\.json: not a readable JSON file"):
        Segmenter.from_pretrained(d)


def test_preprocessor_config_sets_the_hf_input_size_and_normalisation(tiny_convnext_dir, tmp_path):
    d = shutil.copytree(tiny_convnext_dir, tmp_path / "m")
    pre = json.loads((d / "preprocessor_config.json").read_text())
    pre["size"] = {"height": 256, "width": 320}
    pre["image_mean"] = [0.5, 0.5, 0.5]
    (d / "preprocessor_config.json").write_text(json.dumps(pre))
    seg = Segmenter.from_pretrained(d)
    assert seg.info.input_size == (256, 320)
    assert seg.model.config.normalization.mean == (0.5, 0.5, 0.5)
    (d / "preprocessor_config.json").unlink()  # optional: the Hub defaults apply without it
    assert Segmenter.from_pretrained(d).info.input_size == (512, 512)


def test_mismatched_weights_for_config(tiny_convnext_dir, tmp_path):
    """A config.json describing more classes than the weights: a key/shape error, not a silent load."""
    d = shutil.copytree(tiny_convnext_dir, tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    cfg["id2label"] = {str(i): f"c{i}" for i in range(151)}
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"decode_head.classifier.weight file \[150, 32, 1, 1\] vs model"):
        Segmenter.from_pretrained(d)


@pytest.mark.parametrize("palette", [[[1, 2, 3]], [[1, 2]] * 3, [[0, 0, 300]] * 3])
def test_bad_palette_in_config_json(tmp_path, palette):
    d = save_hf_dir(randomize_(tiny_convnext(num_labels=3, id2label={0: "a", 1: "b", 2: "c"})), tmp_path / "p")
    cfg = json.loads((d / "config.json").read_text())
    cfg["palette"] = palette
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"config\.json: .*(palette|colours)"):
        Segmenter.from_pretrained(d)
