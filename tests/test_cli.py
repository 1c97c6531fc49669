"""The command line: help, models, predict outputs re-read and checked, failures and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import random_image, reference_keys
from PIL import Image

from segcli import Segmenter
from segcli.loading.classes import known_set

NINE_PARAMS = {  # parameter totals of the nine Hub checkpoints, from the reference key lists' headers
    name: reference_keys(name)[1]["total"]
    for name in ["upernet-convnext-tiny", "upernet-convnext-xlarge", "upernet-swin-tiny", "upernet-swin-large"]
}


@pytest.fixture()
def tree(tmp_path) -> Path:
    """photos/ with nested folders, two images sharing a stem in different folders, a non-image file."""
    root = tmp_path / "photos"
    for rel, (h, w) in {"a.jpg": (60, 90), "sub/a.png": (45, 33), "sub/deeper/b.JPEG": (80, 64)}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(random_image(h, w, seed=len(rel))).save(root / rel)
    (root / "notes.txt").write_text("not an image")
    return root


def test_help_lists_commands_and_exit_codes(cli):
    r = cli("--help")
    assert r.exit_code == 0
    for word in ("models", "download", "predict", "train", "Exit codes", "130 / 143 / 129", "SIGTERM", "141"):
        assert word in r.stdout
    listed = r.stdout.split("Commands:")[1].split("Exit codes")[0]
    assert "..." not in listed and "…" not in listed  # every summary whole, not cut at 45 characters
    r = cli("predict", "--help")
    assert r.exit_code == 0 and "owner/name[@revision]" in r.stdout and "--out" in r.stdout


def test_predict_help_names_every_preset_and_save_kind(cli):
    from segcli.engine.presets import PRESETS
    from segcli.io.outputs import SAVE_KINDS

    text = "".join(cli("predict", "--help").stdout.split())  # wrapping undone (it may break at hyphens)
    preset = text.split("--presetPRESET")[1][:300]
    save = text.split("--saveKIND,...")[1][:300]
    assert all(name in preset for name in PRESETS), preset
    assert all(kind in save for kind in SAVE_KINDS), save
    assert "upp" in preset and "geotiff" in save


def test_version_and_python_m(cli):
    from segcli import __version__

    assert cli("--version").stdout.strip() == f"segcli {__version__}"
    out = subprocess.run([sys.executable, "-m", "segcli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"segcli {__version__}"


def test_models_json_and_table(cli):
    r = cli("models", "--json")
    assert r.exit_code == 0
    rows = {m["name"]: m for m in json.loads(r.stdout)}
    assert len([n for n, r in rows.items() if (r["repo"] or "").startswith("openmmlab/")]) == 9
    assert len([r for r in rows.values() if r["url"]]) == 6 + 5 + 1  # mmseg, CSAIL, unifiedparsing (two files each)
    assert [r["format"] for r in rows.values() if r["download_page"]] == ["semseg"] * 6
    assert rows["upp-resnet50-upernet"]["params"] == 23_631_808 + 50_546_818  # the authors' encoder + decoder
    assert rows["csail-resnet50-upernet"]["urls"][1].endswith("decoder_epoch_30.pth")
    for name, params in NINE_PARAMS.items():
        assert rows[name]["params"] == params
        assert rows[name]["cached"] is False
    assert rows["upernet-convnext-tiny"]["download_bytes"] == 241_021_848
    table = cli("models")
    assert table.exit_code == 0
    for name in rows:
        assert name in table.stdout
    assert "60.2M" in table.stdout and "46.11 / 46.62" in table.stdout and "not cached" in table.stdout
    assert (
        rows["pspnet-r50-d8-ade20k"]["state"] == "needs conversion"
        and rows["upernet-swin-tiny"]["state"] == "not cached"
        and rows["semseg-pspnet50-voc2012"]["state"] == "download by hand"
    )


def test_models_remembers_sizes_and_recounts_a_damaged_cache(cli, monkeypatch):
    """The sizes are counted once (meta builds) and then read from segcli's cache; a damaged cache file or
    entry is counted again, never shown."""
    import segcli.model
    from segcli.loading.hub import segcli_cache

    first = {m["name"]: m["params"] for m in json.loads(cli("models", "--json").stdout)}
    cache = segcli_cache() / "sizes.json"
    assert len(json.loads(cache.read_text())) == len(first)

    def no_builds(cfg):
        raise AssertionError("built a network although its size was cached")

    with monkeypatch.context() as m:
        m.setattr(segcli.model, "network_size", no_builds)
        again = {m["name"]: m["params"] for m in json.loads(cli("models", "--json").stdout)}
    assert again == first
    from segcli.loading.registry import load_registry
    from segcli.loading.sizes import network_sizes

    configs = [spec.network for spec in load_registry().values()]  # the listing's order
    expected = network_sizes(configs)
    assert [p for p, _ in expected] == list(first.values())
    doc = json.loads(cache.read_text())
    doc[next(iter(doc))] = [-1, "x"]  # one damaged entry
    cache.write_text(json.dumps(doc))
    assert network_sizes(configs) == expected
    cache.write_text("{not json")
    assert network_sizes(configs) == expected and len(json.loads(cache.read_text())) == len(first)
    assert first["upernet-convnext-tiny"] == NINE_PARAMS["upernet-convnext-tiny"]


def test_predict_folder_tree(cli, tiny_convnext_dir, tree, tmp_path):
    out = tmp_path / "out"
    r = cli("predict", tree, "-m", tiny_convnext_dir, "-o", out, "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == ""  # results are files; stdout stays clean
    assert "3 done, 0 skipped, 0 failed of 3" in r.stderr
    pngs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert pngs == ["a.png", "legend.png", "sub/a.png", "sub/deeper/b.png"]  # legend.png: the run's palette
    assert not list(out.rglob("*.tmp")) and not list(out.rglob(".*"))

    seg = Segmenter.from_pretrained(tiny_convnext_dir)
    ade = known_set("ade20k")
    for src, rel in [("a.jpg", "a"), ("sub/a.png", "sub/a"), ("sub/deeper/b.JPEG", "sub/deeper/b")]:
        im = Image.open(out / f"{rel}.png")
        assert im.mode == "P"
        pal = np.asarray(im.getpalette()[: 150 * 3], np.uint8).reshape(150, 3)
        assert np.array_equal(pal, ade.palette_array)
        labels = np.asarray(im)
        expected = seg.predict(tree / src)
        assert np.array_equal(labels, expected)

        doc = json.loads((out / f"{rel}.json").read_text())
        h, w = labels.shape
        assert doc["schema"] == "segcli.prediction/1" and doc["input"] == str(tree / src)
        assert doc["image"] == {"width": w, "height": h} and doc["preset"] == "hf"
        assert doc["model"]["source"] == "local" and len(doc["model"]["sha256"]) == 64
        counts = np.bincount(labels.ravel(), minlength=150)
        assert [c["index"] for c in doc["classes"]] == sorted(np.flatnonzero(counts), key=lambda i: (-counts[i], i))
        for c in doc["classes"]:
            assert c["pixels"] == counts[c["index"]] and c["name"] == ade.classes[c["index"]]
            assert c["fraction"] == pytest.approx(counts[c["index"]] / labels.size)
        assert sum(c["pixels"] for c in doc["classes"]) == labels.size


def test_predict_single_files_keep_their_stem(cli, tiny_convnext_dir, tree, tmp_path):
    out = tmp_path / "out"
    r = cli("predict", tree / "sub/deeper/b.JPEG", tree / "sub/deeper/b.JPEG", "-m", tiny_convnext_dir, "-o", out)
    assert r.exit_code == 0, r.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["b.json", "b.png", "classes.json", "legend.png", "summary.json"]  # named twice, done once


def test_predict_files_with_one_stem_in_two_folders(cli, tiny_convnext_dir, tree, tmp_path):
    out = tmp_path / "out"
    r = cli("predict", tree / "a.jpg", tree / "sub/a.png", "-m", tiny_convnext_dir, "-o", out)
    assert r.exit_code == 0, r.stderr
    assert json.loads((out / "a.json").read_text())["input"] == str(tree / "a.jpg")
    assert json.loads((out / "sub" / "a.json").read_text())["input"] == str(tree / "sub/a.png")


def test_predict_goes_on_after_bad_files(cli, tiny_convnext_dir, tree, tmp_path):
    (tree / "empty.png").write_bytes(b"")
    (tree / "text.jpg").write_text("hello")
    good = (tree / "a.jpg").read_bytes()
    (tree / "trunc.jpg").write_bytes(good[: len(good) // 3])
    out = tmp_path / "out"
    r = cli("predict", tree, tmp_path / "missing-dir", "-m", tiny_convnext_dir, "-o", out)
    assert r.exit_code == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("segcli: error:")]
    assert len(errors) == 4
    for name in ("empty.png: empty file", "text.jpg: not an image", "trunc.jpg: cannot decode", "missing-dir: no such"):
        assert sum(name in line for line in errors) == 1, name
    assert "3 done, 0 skipped, 4 failed of 7" in r.stderr
    assert sorted(p.stem for p in out.rglob("*.png") if p.name != "legend.png") == ["a", "a", "b"]  # good ones done
    assert not (out / "empty.png").exists() and not (out / "trunc.png").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["-m", "no-such-model"], "unknown model 'no-such-model'"),
        (["--preset", "nope"], "unknown preset 'nope'"),
        (["--dtype", "int8"], "unsupported dtype 'int8'"),
        (["--device", "quantum"], "unknown device 'quantum'"),
    ],
)
def test_predict_usage_errors_exit_2(cli, tiny_convnext_dir, tree, tmp_path, args, message):
    base = ["predict", tree, "-o", tmp_path / "out"]
    if "-m" not in args:
        base += ["-m", tiny_convnext_dir]
    r = cli(*base, *args)
    assert r.exit_code == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_predict_out_is_a_file(cli, tiny_convnext_dir, tree, tmp_path):
    (tmp_path / "file").write_text("x")
    r = cli("predict", tree, "-m", tiny_convnext_dir, "-o", tmp_path / "file")
    assert r.exit_code == 2 and "is not a directory" in r.stderr


def test_predict_corrupt_weights_exit_2(cli, tiny_convnext_dir, tree, tmp_path):
    import shutil

    d = shutil.copytree(tiny_convnext_dir, tmp_path / "m")
    (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:1000])
    r = cli("predict", tree, "-m", d, "-o", tmp_path / "out")
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith(f"segcli: error: {d / 'model.safetensors'}: not a readable safetensors file")
    assert len(lines) == 1 and "(the file is truncated or corrupt: download it again" in lines[0]


def test_debug_shows_the_traceback(cli, tiny_convnext_dir, tree, tmp_path):
    r = cli("--debug", "predict", tree, "-m", "no-such-model", "-o", tmp_path / "out")
    assert r.exit_code != 0 and r.exception is not None and "unknown model" in str(r.exception)


def test_bad_preset_is_reported_before_any_download(cli, tree, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the default model is not cached: loading it would fail
    r = cli("predict", tree, "-o", tmp_path / "out", "--preset", "nope")
    assert r.exit_code == 2 and "unknown preset 'nope'" in r.stderr and "HF_HUB_OFFLINE" not in r.stderr


def test_blend_is_applied_recorded_and_part_of_the_resume_fingerprint(cli, tiny_convnext_dir, tmp_path):
    Image.fromarray(random_image(100, 150, seed=9)).save(tmp_path / "a.png")
    slide = ["--preset", "hf", "--resize", "none", "--mode", "slide", "--crop", "64", "--stride", "32"]
    out = tmp_path / "out"
    flat = cli("predict", tmp_path / "a.png", "-m", tiny_convnext_dir, "-o", out, *slide, "--jsonl")
    assert flat.exit_code == 0, flat.stderr
    assert "blend" not in json.loads((out / "a.json").read_text())["inference"]
    r = cli("predict", tmp_path / "a.png", "-m", tiny_convnext_dir, "-o", out, *slide, "--blend", "gaussian", "--jsonl")
    assert r.exit_code == 0 and json.loads(r.stdout)["status"] == "done"  # not skipped: another computation
    assert json.loads((out / "a.json").read_text())["inference"]["blend"] == "gaussian"
    seg = Segmenter.from_pretrained(tiny_convnext_dir)
    want = seg.predict(random_image(100, 150, seed=9), "hf", resize="none", mode="slide", crop=64, stride=32,
                       blend="gaussian")  # fmt: skip
    assert (np.asarray(Image.open(out / "a.png")) == want).all()
    bad = cli("predict", tmp_path / "a.png", "-m", tiny_convnext_dir, "-o", tmp_path / "o2", "--blend", "gaussian")
    assert bad.exit_code == 2 and "apply to slide mode" in bad.stderr
