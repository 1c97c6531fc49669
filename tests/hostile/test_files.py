"""The file system as an adversary: colliding names, FIFOs, symlink loops, full and read-only disks, the
umask, stray temporary files, planted symlinks, unreadable folders; nothing overwritten, nothing hangs."""

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
from helpers import no_hang, photo
from PIL import Image

from segcli import Segmenter
from segcli.errors import ImageError


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


def test_fifos_are_skipped_not_opened(cli, model, tmp_path):
    src = tmp_path / "in"
    photo(src / "a.png")
    os.mkfifo(src / "pipe.png")
    with no_hang(120):  # a FIFO opened for reading would block forever
        r = cli("predict", src, src / "pipe.png", "-m", model, "-o", tmp_path / "out")
    assert r.exit_code == 0, r.stderr
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
    with no_hang(60):
        found = discover(["lp/**/*.png"])
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


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
@pytest.mark.slow  # a real segcli process per umask
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


def test_convert_checks_its_output_before_reading_the_checkpoint(cli, tmp_path):
    """An existing file, a path under a file, a read-only folder or an existing model: one line each, before
    the (possibly large) checkpoint is read — the checkpoint here is not even a checkpoint."""
    src = tmp_path / "m.pth"
    src.write_bytes(b"not read")
    (tmp_path / "file").write_text("x")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    cases = {
        tmp_path / "file": "exists and is not a directory",
        tmp_path / "file" / "sub": "cannot write there",
        model: "already holds a model",
    }
    for out, message in cases.items():
        r = cli("convert", src, "--arch", "pspnet-r50-d8-ade20k", "-o", out)
        assert r.exit_code == 2 and message in r.stderr and "not a readable" not in r.stderr, r.stderr
    assert (model / "config.json").read_text() == "{}"  # nothing replaced
    r = cli("convert", src, "--arch", "pspnet-r50-d8-ade20k", "-o", model, "--overwrite")
    assert r.exit_code == 2 and f"{src}: " in r.stderr and "already holds" not in r.stderr  # it reads, and refuses


@pytest.mark.parametrize("content", [b"root:x:0:0:root:/root:/bin/bash\n", b"PK\x03\x04garbage", b"\x80\x02]q\x00."])
def test_files_that_are_not_checkpoints_are_one_line(cli, tmp_path, content):
    src = tmp_path / "m.pth"
    src.write_bytes(content)
    r = cli("convert", src, "--arch", "pspnet-r50-d8-ade20k", "-o", tmp_path / "out")
    assert r.exit_code == 2 and str(src) in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_file_inside_an_unreadable_folder_is_one_line(cli, model, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root enters any folder")
    locked = tmp_path / "locked"
    photo(locked / "a.png")
    photo(tmp_path / "ok.png")
    locked.chmod(0)
    try:
        r = cli("predict", locked / "a.png", tmp_path / "ok.png", "-m", model, "-o", tmp_path / "out")
    finally:
        locked.chmod(0o755)
    assert r.exit_code == 1 and "a.png: cannot be read (Permission denied)" in r.stderr, r.stderr
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["counts"]["done"] == 1


def test_a_dangling_symlink_is_named_as_one(cli, model, tmp_path):
    src = tmp_path / "in"
    photo(src / "a.png")
    (src / "gone.png").symlink_to(tmp_path / "nowhere.png")
    r = cli("predict", src, "-m", model, "-o", tmp_path / "out")
    assert r.exit_code == 0 and "gone.png: a symbolic link to nothing (dangling): skipped" in r.stderr, r.stderr


def test_discovery_turns_an_os_error_into_that_inputs_line(tmp_path, monkeypatch):
    """The same as above wherever permissions cannot be taken away (root): a path whose checks raise."""
    from segcli.io import inputs

    photo(tmp_path / "ok.png")
    real_is_dir = Path.is_dir

    def is_dir(self):
        if self.name == "a.png":
            raise PermissionError(13, "Permission denied", str(self))
        return real_is_dir(self)

    monkeypatch.setattr(Path, "is_dir", is_dir)
    found = inputs.discover([str(tmp_path / "locked" / "a.png"), str(tmp_path / "ok.png")])
    assert [it.path.name for it in found.items] == ["ok.png"]
    assert found.errors == [(str(tmp_path / "locked" / "a.png"), "cannot be read (Permission denied)")]
