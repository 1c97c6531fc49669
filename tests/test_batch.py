"""`segcli predict` over collections: input forms, names, save kinds, resume, shards, failures, --jsonl."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from helpers import random_image
from PIL import Image

from segcli import Segmenter
from segcli.io.inputs import discover, in_shard, parse_shard
from segcli.io.outputs import FINGERPRINT_KEY


def make(root: Path, files: dict[str, tuple[int, int]]) -> Path:
    for rel, (h, w) in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(random_image(h, w, seed=len(rel) + h)).save(root / rel)
    return root


@pytest.fixture()
def seg(tiny_convnext_dir) -> Segmenter:
    return Segmenter.from_pretrained(tiny_convnext_dir)


# ---------------------------------------------------------------- inputs and names


def names(found) -> list[str]:
    return [it.name.as_posix() for it in found.items]


def test_folder_keeps_its_tree_and_extensions_are_case_insensitive(tmp_path):
    root = make(tmp_path / "photos", {"a.JPG": (8, 8), "x/b.png": (8, 8), "x/y/c.TIFF": (8, 8)})
    (root / "notes.txt").write_text("no")
    (root / ".hidden.png").write_bytes(b"")
    assert names(discover([str(root)])) == ["a", "x/b", "x/y/c"]
    assert names(discover([str(root)], recursive=False)) == ["a"]
    assert names(discover([str(root)], extensions=(".png",))) == ["x/b"]


def test_same_stem_in_different_folders_never_collides(tmp_path):
    make(tmp_path, {"a/x.jpg": (8, 8), "b/x.jpg": (8, 8)})
    assert names(discover([str(tmp_path / "a/x.jpg"), str(tmp_path / "b/x.jpg")])) == ["a/x", "b/x"]
    assert names(discover([str(tmp_path / "a"), str(tmp_path / "b")])) == ["a/x", "b/x"]


def test_same_stem_in_one_folder_keeps_the_extension(tmp_path):
    make(tmp_path, {"x.jpg": (8, 8), "x.png": (8, 8), "y.png": (8, 8)})
    assert names(discover([str(tmp_path)])) == ["x.jpg", "x.png", "y"]


def test_globs_stdin_lines_and_nul_and_duplicates(tmp_path, monkeypatch):
    make(tmp_path, {"d/1/a.png": (8, 8), "d/2/b.png": (8, 8), "d/2/c.jpg": (8, 8)})
    monkeypatch.chdir(tmp_path)
    assert names(discover(["d/*/*.png"])) == ["1/a", "2/b"]
    assert names(discover(["d/**/*.jpg"])) == ["c"]
    listing = "d/1/a.png\nd/2/c.jpg\r\nd/1/a.png\n\n"
    assert names(discover(["-"], stdin=io.BytesIO(listing.encode()))) == ["1/a", "2/c"]
    weird = tmp_path / "d" / "2" / "line\nbreak.png"  # only NUL-separated lists can carry this name
    Image.fromarray(random_image(8, 8)).save(weird)
    nul = b"\0".join([os.fsencode(weird), b"d/2/b.png"]) + b"\0"
    assert names(discover(["-"], stdin=io.BytesIO(nul), null=True)) == ["b", "line\nbreak"]
    found = discover(["d/2/b.png", "d/2/../2/b.png", "d/2"])  # one image named three times
    assert names(found).count("2/b") + names(found).count("b") == 1
    bad = discover(["nothing/*.png", "missing.jpg"])
    assert [e[1] for e in bad.errors] == ["the pattern matches nothing", "no such file or directory"]


def test_output_folder_inside_an_input_folder_is_not_searched(tmp_path):
    make(tmp_path, {"a.png": (8, 8), "out/a.png": (8, 8)})
    assert names(discover([str(tmp_path)], exclude=tmp_path / "out")) == ["a"]


def test_shards_partition_the_inputs_exactly(tmp_path):
    make(tmp_path, {f"s/{i:03d}.png": (4, 4) for i in range(60)})
    items = discover([str(tmp_path / "s")]).items
    parts = [[it.name for it in items if in_shard(it, (i, 4))] for i in range(4)]
    assert sorted(n for p in parts for n in p) == sorted(it.name for it in items)  # each exactly once
    assert all(p for p in parts)  # none empty at 60 items
    assert parse_shard("3/4") == (3, 4)
    for bad in ("4/4", "-1/4", "a/b", "1"):
        with pytest.raises(Exception, match="--shard"):
            parse_shard(bad)


# ---------------------------------------------------------------- outputs


def test_every_save_kind_is_written_and_correct(cli, tiny_convnext_dir, seg, tmp_path):
    src = make(tmp_path / "in", {"p/photo.png": (50, 70)})
    out = tmp_path / "out"
    r = cli("predict", src, "-m", tiny_convnext_dir, "-o", out, "--save", "label,overlay,probs,json", "--alpha", "0.25")
    assert r.exit_code == 0, r.stderr
    base = out / "p"
    image = np.asarray(Image.open(src / "p/photo.png").convert("RGB"))
    run = seg.run(image, probs=True)
    pal = Image.open(base / "photo.png")
    assert pal.mode == "P" and np.array_equal(np.asarray(pal), run.labels)
    assert pal.text[FINGERPRINT_KEY]  # what made it, for resuming
    label = Image.open(base / "photo_label.png")
    assert label.mode == "L" and np.array_equal(np.asarray(label), run.labels)
    overlay = np.asarray(Image.open(base / "photo_overlay.jpg")).astype(float)
    assert overlay.shape[0] > 50 and overlay.shape[1] == 480  # the legend, under the image
    overlay = overlay[:50, :70]
    colours = seg.palette[run.labels]
    err = {a: np.abs(overlay - ((1 - a) * image + a * colours)).mean() for a in (0.0, 0.25, 0.5)}
    assert overlay.shape == image.shape and err[0.25] < 6 and err[0.25] < min(err[0.0], err[0.5]) / 2  # JPEG
    probs = np.load(base / "photo_probs.npy")
    assert probs.dtype == np.float16 and probs.shape == (150, 50, 70)
    assert np.abs(probs.astype(np.float32) - run.probs.astype(np.float32)).max() == 0
    assert np.allclose(probs.astype(np.float32).sum(0), 1, atol=2e-2)
    doc = json.loads((base / "photo.json").read_text())
    assert doc["schema"] == "segcli.prediction/1" and doc["name"] == "p/photo"
    assert doc["image"] == {"width": 70, "height": 50}
    assert doc["model"]["sha256"] == seg.info.origin.sha256 and doc["inference"]["preset"] == "hf"
    assert set(doc["timings"]) == {"decode_s", "inference_s", "write_s"}
    assert doc["outputs"]["overlay"] == str(base / "photo_overlay.jpg")
    assert sum(c["pixels"] for c in doc["classes"]) == 50 * 70
    summary = json.loads((out / "summary.json").read_text())
    assert summary["schema"] == "segcli.run/1" and summary["counts"] == {
        "total": 1,
        "done": 1,
        "skipped": 0,
        "failed": 0,
    }
    assert summary["classes"] == doc["classes"] and summary["images_per_second"] > 0


def test_topk_probabilities(cli, tiny_convnext_dir, seg, tmp_path):
    src = make(tmp_path / "in", {"q.png": (70, 30)})  # rows in bands of 32 (outputs.TOPK_ROWS) and a rest
    out = tmp_path / "out"
    assert cli("predict", src, "-m", tiny_convnext_dir, "-o", out, "--save", "probs", "--topk", "3").exit_code == 0
    z = np.load(out / "q_top3.npz")
    full = seg.run(src / "q.png", probs=True).probs
    assert z["indices"].shape == (3, 70, 30) and z["probs"].dtype == np.float16
    assert np.array_equal(z["indices"][0], full.astype(np.float32).argmax(0))
    assert np.array_equal(z["indices"], np.argsort(-full, axis=0, kind="stable")[:3])
    assert np.all(z["probs"][0] >= z["probs"][1]) and np.all(z["probs"][1] >= z["probs"][2])
    assert not (out / "q.json").exists()  # --save lists everything besides the palette PNG


def test_more_than_256_classes_write_16_bit_pngs(cli, tmp_path):
    from helpers import randomize_, save_hf_dir, tiny_convnext

    names_ = {i: f"c{i}" for i in range(300)}
    d = save_hf_dir(randomize_(tiny_convnext(num_labels=300, id2label=names_), seed=9), tmp_path / "m300")
    src = make(tmp_path / "in", {"z.png": (24, 40)})
    out = tmp_path / "out"
    assert cli("predict", src, "-m", d, "-o", out, "--save", "label").exit_code == 0
    expected = Segmenter.from_pretrained(d).predict(src / "z.png")
    for f in ("z.png", "z_label.png"):
        im = Image.open(out / f)
        assert im.mode in ("I;16", "I") and np.array_equal(np.asarray(im), expected)
    assert expected.max() >= 0


def test_jsonl_stdout_is_only_json(cli, tiny_convnext_dir, tmp_path):
    src = make(tmp_path / "in", {"a.png": (20, 20), "b.png": (20, 20)})
    (src / "c.png").write_bytes(b"")
    r = cli("predict", src, "-m", tiny_convnext_dir, "-o", tmp_path / "out", "--jsonl")
    assert r.exit_code == 1
    records = [json.loads(line) for line in r.stdout.splitlines()]  # every line parses
    assert [(x["name"], x["status"]) for x in records] == [("a", "done"), ("b", "done"), ("c", "failed")]
    assert "empty file" in records[2]["error"] and records[0]["classes"]
    assert "segcli: error:" in r.stderr and "c.png" in r.stderr


# ---------------------------------------------------------------- resume, safety, failures


def test_resume_after_a_kill_redoes_only_unfinished_images(cli, tiny_convnext_dir, tmp_path):
    src = make(tmp_path / "in", {f"{i}.png": (20, 24) for i in range(4)})
    out = tmp_path / "out"
    first = cli("predict", src, "-m", tiny_convnext_dir, "-o", out, "--jsonl")
    assert first.exit_code == 0
    # simulate a kill during image 2: its PNG never got renamed into place, a temp file was left behind
    (out / "2.png").unlink()
    (out / ".2.png.abc123.tmp").write_bytes(b"\x89PNG partial")
    stamp = (out / "0.png").stat().st_mtime_ns
    again = cli("predict", src, "-m", tiny_convnext_dir, "-o", out, "--jsonl")
    assert again.exit_code == 0, again.stderr
    status = {json.loads(line)["name"]: json.loads(line)["status"] for line in again.stdout.splitlines()}
    assert status == {"0": "skipped", "1": "skipped", "2": "done", "3": "skipped"}
    assert (out / "0.png").stat().st_mtime_ns == stamp  # untouched
    assert Image.open(out / "2.png").mode == "P"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"total": 4, "done": 1, "skipped": 3, "failed": 0}
    assert sum(c["pixels"] for c in summary["classes"]) == 4 * 20 * 24  # skipped ones counted from their JSON


def test_other_parameters_or_overwrite_redo_everything(cli, tiny_convnext_dir, tmp_path):
    src = make(tmp_path / "in", {"a.png": (20, 24)})
    out = tmp_path / "out"
    base = ["predict", src, "-m", tiny_convnext_dir, "-o", out, "--jsonl"]
    assert cli(*base).exit_code == 0
    assert json.loads(cli(*base).stdout)["status"] == "skipped"
    assert json.loads(cli(*base, "--resize", "64x64").stdout)["status"] == "done"  # other parameters
    assert json.loads(cli(*base, "--resize", "64x64", "--overwrite").stdout)["status"] == "done"
    assert json.loads(cli(*base, "--resize", "64x64", "--save", "json,label").stdout)["status"] == "done"


def test_outputs_never_overwrite_inputs(cli, tiny_convnext_dir, tmp_path):
    src = make(tmp_path / "in", {"a.png": (20, 24)})
    before = (src / "a.png").read_bytes()
    r = cli("predict", src / "a.png", "-m", tiny_convnext_dir, "-o", src)  # --out is the image's own folder
    assert r.exit_code == 2 and "is the input folder" in r.stderr
    assert (src / "a.png").read_bytes() == before and sorted(p.name for p in src.iterdir()) == ["a.png"]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.png", b"", "empty file"),
        ("text.jpg", b"hello", "not an image Pillow can read"),
        ("trunc.jpg", None, "cannot decode image"),
        ("dir.png", "dir", "is a directory"),
    ],
)
def test_each_bad_input_is_one_line_and_the_batch_goes_on(cli, tiny_convnext_dir, tmp_path, name, content, message):
    src = make(tmp_path / "in", {"good.png": (20, 24)})
    if content == "dir":
        (src / name).mkdir()
        args = [src / "good.png", src / name]
    else:
        if content is None:
            buf = io.BytesIO()
            Image.fromarray(random_image(64, 64)).save(buf, "JPEG")
            content = buf.getvalue()[:300]
        (src / name).write_bytes(content)
        args = [src]
    r = cli("predict", *args, "-m", tiny_convnext_dir, "-o", tmp_path / "out")
    errors = [line for line in r.stderr.splitlines() if line.startswith("segcli: error:")]
    if content == "dir":  # a folder argument is searched, not an error: nothing in it
        assert r.exit_code == 0 and not errors
        return
    assert r.exit_code == 1 and len(errors) == 1 and name in errors[0] and message in errors[0]
    assert (tmp_path / "out" / "good.png").exists()


def test_too_large_images_are_refused_unless_the_limit_is_raised(cli, tiny_convnext_dir, tmp_path):
    src = make(tmp_path / "in", {"big.png": (60, 80)})
    r = cli("predict", src, "-m", tiny_convnext_dir, "-o", tmp_path / "o1", "--max-pixels", "1000")
    assert r.exit_code == 1 and "4,800 pixels exceeds the limit of 1,000" in r.stderr
    assert cli("predict", src, "-m", tiny_convnext_dir, "-o", tmp_path / "o2", "--max-pixels", "5000").exit_code == 0


def test_batch_size_gives_the_same_labels(cli, tiny_convnext_dir, tmp_path):
    src = make(tmp_path / "in", {f"{i}.png": (30, 40) for i in range(3)} | {"odd.png": (25, 40)})
    one, many = tmp_path / "one", tmp_path / "many"
    assert cli("predict", src, "-m", tiny_convnext_dir, "-o", one).exit_code == 0
    assert cli("predict", src, "-m", tiny_convnext_dir, "-o", many, "--batch-size", "3").exit_code == 0
    for f in ("0.png", "1.png", "2.png", "odd.png"):
        assert np.array_equal(np.asarray(Image.open(one / f)), np.asarray(Image.open(many / f)))


def test_shard_runs_write_their_own_summaries(cli, tiny_convnext_dir, tmp_path):
    src = make(tmp_path / "in", {f"{i}.png": (16, 16) for i in range(6)})
    out = tmp_path / "out"
    done = []
    for i in range(2):
        r = cli("predict", src, "-m", tiny_convnext_dir, "-o", out, "--shard", f"{i}/2", "--jsonl")
        assert r.exit_code == 0
        done += [json.loads(line)["name"] for line in r.stdout.splitlines()]
        assert (out / f"summary-shard-{i}-of-2.json").exists()
    assert sorted(done) == [str(i) for i in range(6)]


def test_usage_errors_for_batch_flags(cli, tiny_convnext_dir, tmp_path):
    src = make(tmp_path / "in", {"a.png": (8, 8)})
    for args, msg in [
        (["--save", "everything"], "unknown --save kind"),
        (["--shard", "2/2"], "need 0 <= INDEX"),
        (["--alpha", "2"], "outside 0..1"),
        (["--ext", ","], "invalid --ext"),
        (["--backend-measure", "sometimes"], "--backend-measure 'sometimes': give one of auto, again, never"),
    ]:
        r = cli("predict", src, "-m", tiny_convnext_dir, "-o", tmp_path / "o", *args)
        assert r.exit_code == 2 and msg in r.stderr, (args, r.stderr)


def test_plain_progress_lines_when_not_a_terminal(cli, tiny_convnext_dir, tmp_path, monkeypatch):
    import segcli.cli.progress as progress

    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)
    src = make(tmp_path / "in", {f"{i}.png": (16, 16) for i in range(3)})
    r = cli("predict", src, "-m", tiny_convnext_dir, "-o", tmp_path / "o")
    lines = [line for line in r.stderr.splitlines() if "img/s" in line]
    assert lines and "3/3 images (3 done, 0 skipped, 0 failed)" in lines[-1]
    quiet = cli("predict", src, "-m", tiny_convnext_dir, "-o", tmp_path / "o2", "--quiet")
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_progress_counts_the_views_and_windows_inside_an_image(cli, tiny_convnext_dir, tmp_path, monkeypatch):
    """Multi-scale + flip runs several views per image (here 3 scales × flip, whole): the plain progress
    says how far the image is."""
    import segcli.cli.progress as progress

    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)
    src = make(tmp_path / "in", {"a.png": (48, 64)})
    views = ("--preset", "hf", "--resize", "64x64", "--scales", "0.5,1,1.5", "--flip")
    r = cli("predict", src, "-m", tiny_convnext_dir, "-o", tmp_path / "o", *views)
    assert r.exit_code == 0, r.stderr
    lines = [line for line in r.stderr.splitlines() if "windows of its views" in line]
    done = [int(line.split(": ")[2].split("/")[0]) for line in lines]
    assert all(line.startswith("segcli: image 1/1: ") and "/6 windows" in line for line in lines), lines
    assert done == list(range(1, 6))  # after each of the first 5 passes (the 6th finishes the image)


@pytest.mark.slow
def test_ctrl_c_finishes_in_flight_images_and_exits_130(cli, tiny_convnext_dir, tmp_path):
    """A real SIGINT to a running `segcli predict`: exit 130, summary.json says interrupted, every PNG
    that exists is complete, no temp files are left, and re-running finishes the rest."""
    import signal
    import subprocess
    import sys
    import time

    n = 100  # the signal follows the first PNG: dozens of images are still to come (at 128x128 too)
    src = make(tmp_path / "in", {f"{i:03d}.png": (96, 96) for i in range(n)})
    out = tmp_path / "out"
    small = ["--resize", "128x128"]  # not the preset's 512x512: the re-run below runs the rest in this process
    cmd = [sys.executable, "-m", "segcli", "predict", str(src), "-m", str(tiny_convnext_dir), "-o", str(out), "-q"]
    cmd += small
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ})
    deadline = time.monotonic() + 120
    while not (out.is_dir() and any(out.glob("0*.png"))) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == 130, err.decode()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and 0 < summary["counts"]["done"] < n
    assert not list(out.glob(".*.tmp"))
    for png in out.glob("0*.png"):
        assert np.asarray(Image.open(png)).shape == (96, 96)  # complete files only
    again = cli("predict", src, "-m", tiny_convnext_dir, "-o", out, "-q", *small)
    assert again.exit_code == 0
    after = json.loads((out / "summary.json").read_text())["counts"]
    assert after["skipped"] == summary["counts"]["done"] and after["done"] + after["skipped"] == n


def test_discovery_leaves_out_segcli_outputs(cli, tiny_convnext_dir, tmp_path):
    """`predict photos -o photos/masks2` after `-o photos/masks`: the old masks are not inputs."""
    photos = make(tmp_path / "photos", {"a.png": (20, 24), "sub/b.png": (20, 24)})
    assert cli("predict", photos, "-m", tiny_convnext_dir, "-o", photos / "masks").exit_code == 0
    (photos / "masks" / "summary.json").rename(photos / "masks" / "summary-shard-0-of-1.json")  # any summary
    r = cli("predict", photos, "-m", tiny_convnext_dir, "-o", photos / "masks2", "--jsonl")
    assert r.exit_code == 0, r.stderr
    assert sorted(json.loads(x)["name"] for x in r.stdout.splitlines()) == ["a", "sub/b"]
    assert "left out 0 PNG(s) segcli wrote and 1 output folder(s) of earlier runs" in r.stderr
    loose = tmp_path / "loose"  # masks copied next to images, without their summary
    make(loose, {"c.png": (20, 24)})
    (loose / "old_mask.png").write_bytes((photos / "masks" / "a.png").read_bytes())
    r = cli("predict", loose, "-m", tiny_convnext_dir, "-o", tmp_path / "out", "--jsonl")
    assert [json.loads(x)["name"] for x in r.stdout.splitlines()] == ["c"] and "left out 1 PNG(s)" in r.stderr
