"""Caches and run files that another process (or a user) can change: segcli reads them as untrusted input.
A damaged, oddly typed, endlessly nested or swapped file, a FIFO or a device in its place: ignored or made
again, never a traceback, never a hang."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from helpers import no_hang, photo

from segcli import Segmenter
from segcli.backends import calibrate
from segcli.backends.ort import _intact, export_key
from segcli.batch.request import earlier_backend

ENTRY = {"seconds": {"torch": 1.0, "compile": 0.5}, "choice": "compile", "notes": {}}


def _plant(path: Path, kind: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "zero":
        path.symlink_to("/dev/zero")
    elif kind == "nested":
        path.write_text("[" * 100_000 + "]" * 100_000)
    else:
        path.write_text(kind)


@pytest.mark.parametrize(
    "content",
    [
        "fifo",
        "zero",
        "nested",
        "{not json",
        json.dumps({"k": {**ENTRY, "seconds": {"torch": "fast", "compile": None}}}),
        json.dumps({"k": {**ENTRY, "notes": ["a list"]}}),
        json.dumps({"k": {**ENTRY, "choice": "tensorrt"}}),
        json.dumps({"k": [1, 2]}),
    ],
)
def test_a_bad_calibration_cache_is_a_miss(content):
    _plant(calibrate.cache_file(), content)
    with no_hang(30):
        assert calibrate.lookup("k") is None
        calibrate.store("k", ENTRY)  # rebuilt: the bad file replaced
    assert calibrate.lookup("k") == ENTRY


def test_a_good_calibration_entry_is_read():
    calibrate.store("k", ENTRY)
    assert calibrate.lookup("k") == ENTRY and calibrate.lookup("other") is None


@pytest.mark.parametrize("content", ["fifo", "zero", "nested", json.dumps({"inference": {"backend": {"a": 1}}})])
def test_a_bad_summary_in_out_is_ignored(cli, tiny_convnext_dir, tmp_path, content):
    photo(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    _plant(out / "summary.json", content)
    assert earlier_backend(out, overwrite=False) is None
    with no_hang(120):
        r = cli("predict", tmp_path / "in", "-m", tiny_convnext_dir, "-o", out, "--backend", "auto", "-q")
    assert r.exit_code == 0, r.stderr
    assert json.loads((out / "summary.json").read_text())["counts"]["done"] == 1  # replaced by this run's


@pytest.mark.slow
def test_an_export_cache_holds_only_this_models_export(tiny_convnext_dir, tiny_swin_dir, backend_exports):
    """Another model's export (with its record) copied into this model's cache folder: detected and made
    again, and the labels stay this model's; a FIFO or a device in place of the graph: detected as not intact
    in bounded time (what then follows is the same re-export)."""
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the [onnx] extra)")
    from helpers import random_image

    from segcli.loading.hub import segcli_cache

    exports = segcli_cache() / "exports"
    params = {"resize": "128x128"}  # the two exports (made once per session, as the backends' tests use them)
    backend_exports(tiny_convnext_dir, **params)
    (mine,) = exports.iterdir()
    backend_exports(tiny_swin_dir, **params)
    (theirs,) = [d for d in exports.iterdir() if d != mine]
    image = random_image(128, 128, seed=1)
    eager = Segmenter.from_pretrained(tiny_convnext_dir).predict(image, "hf", **params)
    shutil.rmtree(mine)
    shutil.copytree(theirs, mine)
    said: list[str] = []
    again = Segmenter.from_pretrained(tiny_convnext_dir)
    with no_hang(300):
        again.use_backend("onnxruntime", again.params("hf", **params), log=said.append)
    assert any("exporting" in s for s in said)  # made again
    assert (again.predict(image, "hf", **params) == eager).mean() > 0.999
    key = export_key(again.network, again.info, (128, 128))
    assert _intact(mine, key) is True  # the export made again is this model's
    for plant in ("fifo", "zero"):
        _plant(mine / "model.onnx", plant)
        with no_hang(60):
            assert _intact(mine, key) is False, plant
