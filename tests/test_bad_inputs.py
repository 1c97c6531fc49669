"""Untrusted input, table by table: each case is one line naming the file (or flag) and an exit code, fast.

Classes (issue "Hardening"): data loss, one input never stops the batch, no hangs, untrusted configuration
validated, and the smaller ones (umask, stray temporary files, planted symlinks, Pillow warnings).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import random_image
from PIL import Image

from segcli import Segmenter
from segcli.errors import CheckpointError, ConfigError, ImageError

MODEL_KEY = "tiny-model"


def photo(path: Path, h: int = 24, w: int = 32, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(random_image(h, w, seed=seed)).save(path)
    return path


@pytest.fixture()
def model(tiny_convnext_dir, tmp_path) -> Path:
    """A writable copy of the tiny model directory."""
    return Path(shutil.copytree(tiny_convnext_dir, tmp_path / "model"))


# ------------------------------------------------------------------ untrusted configuration


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
    start = time.perf_counter()
    with pytest.raises(ConfigError) as e:
        Segmenter.from_pretrained(model)
    assert time.perf_counter() - start < 5
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
    pytest.importorskip("onnxruntime")
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


@pytest.mark.parametrize(
    "args, message",
    [
        (["--resize", "0"], "invalid resize"),
        (["--resize", "0x0"], "invalid resize"),
        (["--resize", "999999999x2"], "invalid resize"),
        (["--scales", "nan"], "invalid scales"),
        (["--scales", "inf"], "invalid scales"),
        (["--scales", "1e-300"], "invalid scales"),
        (["--mode", "slide", "--crop", "0"], "invalid crop"),
        (["--tile-batch", "100000"], "tile-batch"),
        (["-o", ""], "--out is empty"),
        (["--batch-size", "0"], "--batch-size"),
    ],
)
def test_bad_flags_are_usage_errors(cli, model, tmp_path, args, message):
    photo(tmp_path / "in" / "a.png")
    base = ["predict", tmp_path / "in", "-m", model]
    r = cli(*base, *(args if "-o" in args else [*args, "-o", tmp_path / "out"]))
    assert r.exit_code == 2 and message in r.stderr, r.stderr


def test_evaluate_num_classes_zero_is_a_usage_error(cli, tmp_path):
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    r = cli("evaluate", "--gt", tmp_path / "gt", "--pred", tmp_path / "pred", "--num-classes", "0")
    assert r.exit_code == 2 and "--num-classes 0" in r.stderr


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


# ------------------------------------------------------------------ one input never stops the batch


def test_thin_and_tiny_images_under_slide_are_segmented(cli, model, tmp_path):
    src = tmp_path / "in"
    photo(src / "thin.png", 40, 1000, seed=1)
    photo(src / "tall.png", 900, 30, seed=2)
    Image.fromarray(np.array([[[200, 10, 10]]], np.uint8)).save(src / "dot.png")
    r = cli("predict", src, "-m", model, "-o", tmp_path / "out", "--resize", "none", "--mode", "slide", "--crop", "64")
    assert r.exit_code == 0, r.stderr
    for name, shape in {"thin": (40, 1000), "tall": (900, 30), "dot": (1, 1)}.items():
        assert np.asarray(Image.open(tmp_path / "out" / f"{name}.png")).shape == shape


def test_undecodable_files_fail_alone(cli, model, tmp_path):
    src = tmp_path / "in"
    photo(src / "good.png")
    (src / "fake.jpg").write_bytes(b"DDS |\x00\x00\x00\x07\x10\x08\x00" + b"\x00" * 120)  # a DDS header
    gif = Image.fromarray(random_image(16, 16)).convert("P")
    gif.save(src / "trunc.gif")
    (src / "trunc.gif").write_bytes((src / "trunc.gif").read_bytes()[:40])
    r = cli("predict", src, "-m", model, "-o", tmp_path / "out", "--ext", "jpg,png,gif", "--jsonl")
    assert r.exit_code == 1, r.stderr
    status = {json.loads(line)["name"]: json.loads(line)["status"] for line in r.stdout.splitlines()}
    assert status["good"] == "done" and status["fake"] == "failed" and status["trunc"] == "failed"
    errors = [line for line in r.stderr.splitlines() if line.startswith("segcli: error:")]
    assert len(errors) == 2 and all("Traceback" not in e for e in errors)


def test_probs_of_a_huge_image_are_refused_from_the_header(cli, model, tmp_path):
    src = tmp_path / "in"
    photo(src / "small.png")
    # a PNG whose header claims 9000x9000 (a decoder would need the data; the check reads only the header)
    Image.new("L", (9000, 9000)).save(src / "huge.png", optimize=False, compress_level=9)
    r = cli("predict", src, "-m", model, "-o", tmp_path / "out", "--save", "probs", "--max-pixels", str(10**8))
    assert r.exit_code == 1 and "--save probs would hold" in r.stderr and "limit is 4 GiB" in r.stderr
    assert (tmp_path / "out" / "small_probs.npy").is_file() and not (tmp_path / "out" / "huge.png").exists()


# ------------------------------------------------------------------ data loss


def test_evaluate_save_pred_may_not_overlap_inputs(cli, model, tmp_path):
    gt, images = tmp_path / "gt", tmp_path / "images"
    photo(images / "a.png")
    Image.fromarray(np.zeros((24, 32), np.uint8)).save(gt / "a.png") if gt.mkdir() is None else None
    before = (gt / "a.png").read_bytes()
    for target in (gt, gt / "sub", tmp_path, images):
        r = cli("evaluate", "--gt", gt, "--model", model, "--images", images, "--save-pred", target)
        assert r.exit_code == 2 and "--save-pred" in r.stderr and "mixed with" in r.stderr, (target, r.stderr)
    assert (gt / "a.png").read_bytes() == before and sorted(p.name for p in gt.iterdir()) == ["a.png"]


def test_export_onto_its_own_source_is_refused(cli, model):
    before = (model / "model.safetensors").read_bytes()
    for out in (model, model / "sub"):
        r = cli("export", model, "-f", "safetensors-fp16", "-o", out)
        assert r.exit_code == 2 and "inside the model's folder" in r.stderr
    assert (model / "model.safetensors").read_bytes() == before


def test_colliding_names_get_distinct_outputs_and_resume(cli, model, tmp_path):
    src = tmp_path / "in"
    for i, name in enumerate(["x.jpg", "x.png", "x.jpg.png", "a.jpg", "a_label.jpg", "summary.jpg", "p.png"]):
        photo(src / name, 20 + i, 30, seed=i)
    out = tmp_path / "out"
    r = cli("predict", src, "-m", model, "-o", out, "--save", "label,json", "--ext", "jpg,png")
    assert r.exit_code == 0, r.stderr
    seg = Segmenter.from_pretrained(model)
    pngs = sorted(p.name for p in out.glob("*.png") if p.name != "legend.png")
    assert len(pngs) == 7 * 2  # a palette and a label PNG per input, none shared
    for rec in (
        json.loads(p.read_text()) for p in out.glob("*.json") if p.name not in ("summary.json", "classes.json")
    ):
        labels = np.asarray(Image.open(rec["outputs"]["png"]))
        assert np.array_equal(labels, seg.predict(rec["input"]))  # each file belongs to its own input
        assert np.array_equal(np.asarray(Image.open(rec["outputs"]["label"])), labels)
    assert json.loads((out / "summary.json").read_text())["schema"] == "segcli.run/1"
    assert (out / "p.png").is_file()  # unambiguous names keep the short form
    again = cli("predict", src, "-m", model, "-o", out, "--save", "label,json", "--ext", "jpg,png", "--jsonl")
    assert again.exit_code == 0 and {json.loads(x)["status"] for x in again.stdout.splitlines()} == {"skipped"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["skipped"] == 7 and sum(c["pixels"] for c in summary["classes"]) == sum(
        (20 + i) * 30 for i in range(7)
    )


# ------------------------------------------------------------------ no hangs, fast failures


def test_fifos_are_skipped_not_opened(cli, model, tmp_path):
    src = tmp_path / "in"
    photo(src / "a.png")
    os.mkfifo(src / "pipe.png")
    start = time.perf_counter()
    r = cli("predict", src, src / "pipe.png", "-m", model, "-o", tmp_path / "out")
    assert r.exit_code == 0 and time.perf_counter() - start < 60, r.stderr
    assert r.stderr.count("not a regular file") == 1  # named twice, skipped once
    with pytest.raises(ImageError, match="not a regular file"):
        from segcli.io.images import load_image

        load_image(src / "pipe.png")


def test_globs_do_not_follow_symlink_loops(tmp_path, monkeypatch):
    from segcli.io.inputs import discover

    photo(tmp_path / "lp" / "a" / "x.png")
    (tmp_path / "lp" / "a" / "up").symlink_to("..")
    (tmp_path / "lp" / "a" / "self").symlink_to(".")
    monkeypatch.chdir(tmp_path)
    start = time.perf_counter()
    found = discover(["lp/**/*.png"])
    assert time.perf_counter() - start < 5
    assert [it.path.resolve() for it in found.items] == [(tmp_path / "lp/a/x.png").resolve()]


def test_out_under_a_regular_file_fails_before_the_model_loads(cli, model, tmp_path):
    photo(tmp_path / "in" / "a.png")
    (tmp_path / "file").write_text("x")
    r = cli("predict", tmp_path / "in", "-m", "no-such-model", "-o", tmp_path / "file" / "out")
    assert r.exit_code == 2 and "cannot write there" in r.stderr and "no-such-model" not in r.stderr


def _mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


@pytest.fixture()
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "size=96k"):
        pytest.skip("mounting a tmpfs needs privileges this machine does not give")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_full_disk_fails_images_not_the_run(cli, model, tmp_path, small_disk):
    src = tmp_path / "in"
    for i in range(6):
        photo(src / f"{i}.png", 120, 160, seed=i)
    r = cli("predict", src, "-m", model, "-o", small_disk / "out", "--save", "label,json,overlay")
    assert r.exit_code == 1, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("segcli: error:")]
    assert errors and all("No space left on device" in e for e in errors), r.stderr
    out = small_disk / "out"
    assert not list(out.rglob("*.tmp"))  # no temporary files left
    names = {p.name for p in out.iterdir()} - {"summary.json", "legend.png", "classes.json"}
    stems = {n.split("_")[0].split(".")[0] for n in names}
    for stem in stems:  # every image is finished (all four files) or absent, never half
        assert {f"{stem}.png", f"{stem}.json", f"{stem}_label.png", f"{stem}_overlay.jpg"} <= names, (stem, names)
    assert len(stems) < 6


def test_read_only_out_fails_up_front(cli, model, tmp_path):
    ro = tmp_path / "ro"
    if not _mount_tmpfs(ro, "size=64k,ro"):
        pytest.skip("mounting a tmpfs needs privileges this machine does not give")
    try:
        photo(tmp_path / "in" / "a.png")
        r = cli("predict", tmp_path / "in", "-m", model, "-o", ro / "out")
        assert r.exit_code == 2 and "cannot write there (Read-only file system)" in r.stderr
    finally:
        subprocess.run(["umount", "-l", str(ro)], capture_output=True)


def _run_segcli(args: list, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "segcli", *map(str, args)], **kw)


@pytest.mark.parametrize("signum, code", [(15, 143), (1, 129)])
def test_sigterm_and_sighup_stop_like_ctrl_c(model, tmp_path, signum, code):
    src = tmp_path / "in"
    for i in range(40):
        photo(src / f"{i:02d}.png", 64, 64, seed=i)
    out = tmp_path / "out"
    proc = _run_segcli(["predict", src, "-m", model, "-o", out, "--resize", "1024x1024"], stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not list(out.glob("*.png")) and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err.decode()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["counts"]["done"] < 40
    assert not list(out.glob(".*.tmp"))
    for rec in (json.loads(p.read_text()) for p in out.glob("[0-9]*.json")):
        assert Path(rec["outputs"]["png"]).is_file()  # every JSON written has its PNG


def test_closed_jsonl_pipe_keeps_the_summary(model, tmp_path):
    src = tmp_path / "in"
    for i in range(12):
        photo(src / f"{i:02d}.png", 32, 32, seed=i)
    out = tmp_path / "out"
    cmd = f"{sys.executable} -m segcli predict {src} -m {model} -o {out} --jsonl -q | head -1"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, timeout=300)
    assert done.returncode == 141, done.stderr
    assert json.loads(done.stdout)["status"] == "done" and "Traceback" not in done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["counts"]["done"] >= 1


def test_unreachable_hub_is_one_quick_error(cli, tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    start = time.perf_counter()
    r = cli("download", "someone/some-model")
    assert time.perf_counter() - start < 10
    lines = r.stderr.splitlines()
    assert r.exit_code == 2 and "cannot be reached" in lines[0] and "Connection refused" in lines[0], r.stderr
    assert "segcli download" not in r.stderr  # the command that failed does not suggest itself
    assert len(lines) == 3 and "HF_HUB_OFFLINE=1" in lines[2]


def test_url_downloads_honour_offline(monkeypatch, tmp_path):
    from segcli.errors import DownloadError
    from segcli.loading.hub import fetch_url

    (tmp_path / "x.pth").write_bytes(b"data")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError, match="HF_HUB_OFFLINE is set"):
        fetch_url((tmp_path / "x.pth").as_uri(), tmp_path / "copy.pth")
    assert not (tmp_path / "copy.pth").exists()


# ------------------------------------------------------------------ evaluate


def test_evaluate_one_bit_bomb_and_label_suffix_pairs(cli, tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    ones = np.zeros((8, 8), bool)
    ones[:, 4:] = True
    Image.fromarray(ones).save(gt / "bits.png")  # mode 1
    Image.fromarray(ones.astype(np.uint8)).save(pred / "bits.png")
    Image.new("L", (30000, 30000)).save(gt / "bomb.png")  # 900 Mpx: over the pixel limit
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(pred / "bomb.png")
    Image.fromarray(np.full((8, 8), 1, np.uint8)).save(gt / "road_label.png")
    Image.fromarray(np.full((8, 8), 1, np.uint8)).save(pred / "road_label.png")  # prediction of road_label.jpg
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(gt / "road.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(pred / "road.png")
    r = cli("evaluate", "--gt", gt, "--pred", pred, "--num-classes", "2", "--json", "-", "--per-image")
    assert r.exit_code == 1 and "bomb.png: cannot read label map" in r.stderr and "exceeds" in r.stderr
    doc = json.loads(r.stdout)
    assert doc["pairs"] == 3 and doc["summary"]["aAcc"] == 1.0  # every pair that was read matches exactly
    assert {p["name"] for p in doc["per_image"]} == {"bits", "road", "road_label"}


# ------------------------------------------------------------------ smaller


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_outputs_honour_the_umask(model, tmp_path, umask, mode):
    photo(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    script = (
        f"import os; os.umask({umask}); from segcli.cli.app import main; import sys; "
        f"sys.argv = ['segcli', 'predict', {str(tmp_path / 'in')!r}, '-m', {str(model)!r}, '-o', {str(out)!r}, '-q']; main()"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for f in ("a.png", "a.json", "summary.json"):
        assert stat.S_IMODE((out / f).stat().st_mode) == mode, f


def test_stray_temporary_files_of_a_killed_run_are_removed(cli, model, tmp_path):
    photo(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    from segcli.fsutil import _host

    host = _host()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = out / f".a.png.segcli-{host}-{dead.stdout.strip()}-abcd.tmp"
    stale.write_bytes(b"partial")
    live = out / f".b.png.segcli-{host}-{os.getpid()}-efgh.tmp"  # a live process's: left alone
    live.write_bytes(b"in progress")
    assert cli("predict", tmp_path / "in", "-m", model, "-o", out).exit_code == 0
    assert not stale.exists() and live.exists()


def test_symlinked_folders_planted_in_out_are_not_followed(cli, model, tmp_path):
    src = tmp_path / "in"
    photo(src / "sub" / "a.png")
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "sub").symlink_to(elsewhere)
    r = cli("predict", src, "-m", model, "-o", out)
    assert r.exit_code == 1 and "symbolic link" in r.stderr
    assert list(elsewhere.iterdir()) == []


def test_pillow_warnings_do_not_leak(model, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 3
    exif[0x010E] = "x" * 100
    Image.fromarray(random_image(24, 32)).save(src / "e.jpg", exif=exif.tobytes()[:-60])  # tag data cut short
    done = subprocess.run(
        [sys.executable, "-m", "segcli", "predict", src, "-m", model, "-o", tmp_path / "out", "-q"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr and done.stderr == "", done.stderr


def test_an_unreadable_subfolder_is_reported(model, tmp_path):
    """Run as an unprivileged user (root reads every folder): the unreadable folder is a failure, exit 1."""
    import tempfile

    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root to switch to an unprivileged user with setpriv")
    base = Path(tempfile.mkdtemp(prefix="segcli-perm-"))
    try:
        base.chmod(0o777)
        shutil.copytree(model, base / "model")
        photo(base / "in" / "ok" / "a.png")
        (base / "in" / "locked").mkdir()
        photo(base / "in" / "locked" / "b.png")
        for p in [base / "model", *base.rglob("*")]:
            p.chmod(0o777 if p.is_dir() else 0o666)
        (base / "in" / "locked").chmod(0o000)
        env = {k: v for k, v in os.environ.items() if k not in ("HF_HOME", "SEGCLI_CACHE")}
        env.update(HOME=str(base), SEGCLI_CACHE=str(base / "cache"), HF_HOME=str(base / "hf"))
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "segcli"]
        args = ["predict", base / "in", "-m", base / "model", "-o", base / "out", "-q"]
        done = subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, timeout=300, env=env, cwd=base)
        assert done.returncode == 1, done.stderr
        assert "locked: cannot read folder (Permission denied)" in done.stderr
        assert (base / "out" / "ok" / "a.png").is_file()
    finally:
        (base / "in" / "locked").chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)


def test_resume_survives_what_is_already_in_out(cli, model, tmp_path):
    """Earlier outputs are data, not truth: a huge PNG, JSON of the wrong shape, a FIFO — planning reads
    only PNG headers and checked JSON, never blocks, and the images are simply redone."""
    src, out = tmp_path / "in", tmp_path / "out"
    for name in ("big", "odd", "fifo"):
        photo(src / f"{name}.png")
    out.mkdir()
    Image.new("L", (14000, 14000)).save(out / "big.png")  # 196 Mpx, over Pillow's bomb limit
    photo(out / "odd.png")
    (out / "odd.json").write_text(json.dumps({"classes": [1, {"index": "2"}, {"index": 1.5, "pixels": "many"}]}))
    os.mkfifo(out / "fifo.png")
    r = cli("predict", src, "-m", model, "-o", out, "--jsonl")
    assert r.exit_code == 0 and "Traceback" not in r.stderr, r.stderr
    status = {json.loads(x)["name"]: json.loads(x)["status"] for x in r.stdout.splitlines()}
    assert status == {"big": "done", "odd": "done", "fifo": "done"}
    assert stat.S_ISREG((out / "fifo.png").stat().st_mode)  # the rename replaced the FIFO's entry


def test_double_star_globs_skip_the_output_folder(cli, model, tmp_path, monkeypatch):
    photo(tmp_path / "photos" / "a" / "x.png")
    monkeypatch.chdir(tmp_path)
    for _ in range(2):  # the second run must not pick up photos/masks/**.png as inputs
        r = cli("predict", "photos/**/*.png", "-m", model, "-o", "photos/masks", "--jsonl")
        assert r.exit_code == 0, r.stderr
        assert [json.loads(x)["name"] for x in r.stdout.splitlines()] == ["x"]


def test_pending_writes_are_bounded():
    """A slow writer holds back inference: at most batch_size + 2 predictions wait for it."""
    import threading
    from pathlib import PurePosixPath

    from segcli.batch.pipeline import Pipeline
    from segcli.batch.plan import Task
    from segcli.batch.records import ImageRecord
    from segcli.io.inputs import Item

    alive, peak, lock = 0, 0, threading.Lock()

    def infer(images):
        nonlocal alive, peak
        with lock:
            alive += len(images)
            peak = max(peak, alive)
        return [object() for _ in images]

    def write(task, image, pred, timings):
        nonlocal alive
        time.sleep(0.01)
        with lock:
            alive -= 1
        return ImageRecord(str(task.item.path), task.item.name.as_posix(), "done")

    tasks = [Task(Item(Path(f"{i}.png"), PurePosixPath(str(i))), {}) for i in range(120)]
    records = []
    Pipeline(lambda t: np.zeros((4, 4, 3), np.uint8), infer, write, batch_size=2).run(tasks, records.append)
    assert [r.name for r in records] == [str(i) for i in range(120)]
    assert peak <= 2 + 2 + 2  # the batch being inferred, the bound, and the one being written
