"""What a new user meets first: offline errors, reproducible records, options that behave as written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import random_image
from PIL import Image

from segcli import Segmenter
from segcli.errors import UsageError


def photos(folder: Path, n: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(random_image(24, 32, seed=i)).save(folder / f"{i}.png")
    return folder


def test_what_changes_outputs_is_recorded_and_fingerprinted(cli, tiny_convnext_dir, tmp_path):
    src, out = photos(tmp_path / "in"), tmp_path / "out"
    assert cli("predict", src, "-m", tiny_convnext_dir, "-o", out).exit_code == 0
    record = json.loads((out / "0.json").read_text())
    assert record["inference"]["dtype"] == "float32" and record["inference"]["device"] == "cpu"
    assert record["inference"]["backend"] == "torch" and record["software"]["torch"] == torch.__version__
    summary = json.loads((out / "summary.json").read_text())
    assert summary["inference"]["dtype"] == "float32" and summary["software"]["segcli"]
    again = cli("predict", src, "-m", tiny_convnext_dir, "-o", out, "--dtype", "bfloat16", "--jsonl")
    assert again.exit_code == 0, again.stderr  # another dtype: redone, not skipped as finished
    assert {json.loads(x)["status"] for x in again.stdout.splitlines()} == {"done"}
    assert json.loads((out / "0.json").read_text())["inference"]["dtype"] == "bfloat16"


def test_float16_on_the_cpu_is_refused(tiny_convnext_dir):
    with pytest.raises(UsageError, match="float16 on the CPU"):
        Segmenter.from_pretrained(tiny_convnext_dir, device="cpu", dtype="float16")


def test_mmseg_preset_follows_the_architecture_for_any_source(tiny_convnext_dir, tiny_swin_dir):
    convnext = Segmenter.from_pretrained(tiny_convnext_dir).params("mmseg")
    assert (convnext.mode, convnext.crop, convnext.stride) == ("slide", (512, 512), (341, 341))
    assert Segmenter.from_pretrained(tiny_swin_dir).params("mmseg").mode == "whole"
    assert Segmenter.from_pretrained(tiny_convnext_dir).params().preset == "hf"  # a local directory's default


def test_raw_ade_annotations_without_reduce_zero_label_get_a_warning(cli, tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    raw = np.zeros((8, 8), np.uint8)
    raw[:, 4:] = 12  # 0 = "other", 1..150: never 255
    Image.fromarray(raw).save(gt / "a.png")
    Image.fromarray(raw).save(pred / "a.png")
    r = cli("evaluate", "--gt", gt, "--pred", pred, "--classes", "ade20k", "--json", "-")
    assert r.exit_code == 0
    last = r.stderr.strip().splitlines()[-1]  # after the table and its mIoU line, where it is read
    assert "raw ADE20K annotations look like that" in last and "run again with --reduce-zero-label" in last
    (warning,) = json.loads(r.stdout)["warnings"]
    assert warning in last
    raw[0, 0] = 255  # an ignore value: reduced annotations
    Image.fromarray(raw).save(gt / "a.png")
    r = cli("evaluate", "--gt", gt, "--pred", pred, "--classes", "ade20k", "-q", "--json", "-")
    assert "raw ADE20K" not in r.stderr and json.loads(r.stdout)["warnings"] == []


def test_global_options_work_after_the_command_too(cli, tiny_convnext_dir, tmp_path):
    reg = tmp_path / "reg.toml"
    reg.write_text("schema = 1\n[models.x]\nlicense = 1\n")
    for args in (["--registry", reg, "models"], ["models", "--registry", reg]):
        r = cli(*args)
        assert r.exit_code == 2 and str(reg) in r.stderr, args
    r = cli("predict", photos(tmp_path / "in"), "-o", tmp_path / "o", "-m", "nope", "--debug")
    assert r.exit_code != 0 and isinstance(r.exception, Exception) and "unknown model" in str(r.exception)


def test_topk_needs_probs(cli, tiny_convnext_dir, tmp_path):
    r = cli("predict", photos(tmp_path / "in"), "-m", tiny_convnext_dir, "-o", tmp_path / "o", "--topk", "3")
    assert r.exit_code == 2 and "--topk applies to the probabilities" in r.stderr


@pytest.mark.parametrize("command", ["models", "download", "predict", "evaluate", "convert", "export"])
def test_help_pages_are_plain_and_state_their_exit_codes(cli, command):
    r = cli(command, "--help")
    assert r.exit_code == 0
    text = r.stdout
    assert not re.search(r"\{[A-Z]+\}|<list\[|<str>|<path>|<int>|<float>|\{src\}", text), text
    assert "Exit codes:" in text and "0 " in text
    if command in ("models", "convert", "download"):
        assert "130" not in text and " 1 " not in text.split("Exit codes:")[1]  # codes they cannot return
    if command == "evaluate":
        assert "rows" in text and "ground truth" in text  # the confusion matrix's orientation


def test_api_errors_name_keyword_arguments(tiny_convnext_dir):
    seg = Segmenter.from_pretrained(tiny_convnext_dir)
    with pytest.raises(UsageError, match=r"crop=/stride=") as e:
        seg.params("hf", crop=256)
    assert 'mode="slide"' in (e.value.hint or "")


def test_torchscript_files_say_what_they_are(cli, tmp_path):
    script = torch.jit.script(torch.nn.Conv2d(3, 2, 1))
    path = tmp_path / "model.pt"
    script.save(str(path))
    r = cli("predict", photos(tmp_path / "in"), "-m", path, "-o", tmp_path / "o")
    assert r.exit_code == 2 and "TorchScript" in r.stderr and "segcli export" in r.stderr
    r = cli("convert", path, "--arch", "pspnet-r50-d8-ade20k", "-o", tmp_path / "c")
    assert r.exit_code == 2 and "TorchScript" in r.stderr and "download it again" not in r.stderr
    assert "Warning" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_evaluate_classes_from_a_local_model_directory(cli, tiny_convnext_dir, tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(gt / "a.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(pred / "a.png")
    r = cli("evaluate", "--gt", gt, "--pred", pred, "--classes", tiny_convnext_dir, "--json", "-", "-q")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["num_classes"] == 150 and doc["classes"][0]["name"] == "wall"


def test_long_steps_report_elapsed_time(capsys):
    import time

    from segcli.cli.progress import Activity

    with Activity("exporting onnx", enabled=True, every=0.05, longest=0.2):
        time.sleep(0.9)  # lines after 0.05, 0.15, 0.35, 0.55, 0.75 s: intervals double up to 0.2 s
    *ticks, last = capsys.readouterr().err.splitlines()
    assert 4 <= len(ticks) <= 6 and all(re.fullmatch(r"segcli: exporting onnx … \d+ s", line) for line in ticks)
    assert re.fullmatch(r"segcli: exporting onnx: done in \d+ s", last)
    with Activity("quiet", enabled=False, every=0.05):
        time.sleep(0.1)
    assert capsys.readouterr().err == ""
