"""The batch run's parts without a model: planning (process / skip / refuse) and the record schemas."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, PngImagePlugin

from segcli.batch import ImageRecord, Options, RunRecord, RunSummary
from segcli.batch.plan import plan
from segcli.io.inputs import Item
from segcli.io.outputs import FINGERPRINT_KEY


def _png_with_text(path: Path, text: str | None) -> None:
    info = PngImagePlugin.PngInfo()
    if text is not None:
        info.add_text(FINGERPRINT_KEY, text)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((4, 4), np.uint8), "L").save(path, pnginfo=info)


def test_plan_processes_skips_finished_and_refuses_overwriting_an_input(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    items = [Item(src / f"{n}.jpg", PurePosixPath(n)) for n in ("new", "done", "stale", "half")]
    for it in items:
        it.path.parent.mkdir(parents=True, exist_ok=True)
        it.path.write_bytes(b"jpeg")
    opts = Options(out, frozenset({"json", "label"}))
    _png_with_text(out / "done.png", "fp-1")
    (out / "done.json").write_text(json.dumps({"classes": [{"index": 2, "pixels": 7}, {"index": 99, "pixels": 5}]}))
    _png_with_text(out / "done_label.png", None)
    _png_with_text(out / "stale.png", "fp-0")  # made with other parameters
    (out / "stale.json").write_text("{}")
    _png_with_text(out / "stale_label.png", None)
    _png_with_text(out / "half.png", "fp-1")  # its JSON is missing: not finished
    clash = Item(out / "x.png", PurePosixPath("x"))  # an input inside --out whose own PNG would replace it
    clash.path.write_bytes(b"png")

    tasks = plan([*items, clash], opts, "fp-1", num_classes=4)
    status = {t.item.name.as_posix(): (t.record.status if t.record else "process") for t in tasks}
    assert status == {"new": "process", "done": "skipped", "stale": "process", "half": "process", "x": "failed"}
    done = tasks[1].record
    assert done is not None and done.counts.tolist() == [0, 0, 7, 0]  # class 99 is outside the model's 4
    assert set(tasks[0].paths) == {"png", "json", "label"} and tasks[0].paths["label"] == out / "new_label.png"
    assert "would overwrite an input image" in tasks[4].record.error

    again = plan(items, Options(out, frozenset({"json", "label"}), overwrite=True), "fp-1", num_classes=4)
    assert all(t.record is None for t in again)


def test_record_json_forms_and_summary_totals():
    done = ImageRecord(
        "a.jpg",
        "a",
        "done",
        outputs={"png": Path("o/a.png")},
        fingerprint="f",
        details={"image": {"width": 2, "height": 1}, "model": {}, "preset": "hf", "inference": {}, "classes": []},
        timings={"decode_s": 0.1},
        counts=np.array([1, 1]),
    )
    skipped = ImageRecord("b.jpg", "b", "skipped", outputs={"png": Path("o/b.png")}, counts=np.array([0, 3]))
    failed = ImageRecord.failed("c.jpg", "c", "c.jpg: broken")
    assert list(done.to_json()) == [
        "schema",
        "input",
        "name",
        "image",
        "model",
        "preset",
        "inference",
        "classes",
        "outputs",
        "fingerprint",
        "timings",
        "status",
        "error",
    ]
    assert "status" not in done.file_json() and done.file_json()["outputs"] == {"png": "o/a.png"}
    assert skipped.to_json() == {
        "schema": "segcli.prediction/1",
        "input": "b.jpg",
        "name": "b",
        "status": "skipped",
        "error": None,
        "outputs": {"png": "o/b.png"},
    }
    assert list(failed.to_json()) == ["schema", "input", "name", "status", "error"]
    summary = RunSummary(("sky", "road"), total=3, run=RunRecord({"name": "m"}, "hf", {}), extra={"out": "o"})
    for r in (done, skipped, failed):
        summary.add(r)
    doc = summary.to_json(["json"])
    assert doc["counts"] == {"total": 3, "done": 1, "skipped": 1, "failed": 1}
    assert doc["failures"] == [{"input": "c.jpg", "error": "c.jpg: broken"}]
    assert [(c["name"], c["pixels"]) for c in doc["classes"]] == [("road", 4), ("sky", 1)]


def test_summary_says_where_the_time_went():
    summary = RunSummary(("sky",), total=3)
    for t in (
        {"decode_s": 0.5, "inference_s": 3.0, "write_s": 0.5},
        {"decode_s": 1.5, "inference_s": 5.0, "write_s": 1.5},
    ):
        summary.add(ImageRecord("x.jpg", "x", "done", timings=t, counts=np.array([1])))
    summary.add(ImageRecord("y.jpg", "y", "skipped", timings={"decode_s": 99.0}))  # not run: not counted
    timings = summary.to_json([])["timings"]
    assert timings == {
        "decode_s": {"seconds": 2.0, "share": 2 / 12, "per_image": 1.0},
        "inference_s": {"seconds": 8.0, "share": 8 / 12, "per_image": 4.0},
        "write_s": {"seconds": 2.0, "share": 2 / 12, "per_image": 1.0},
    }


def test_json_outputs_are_strict():
    """NaN and infinity (a raster's broken geotransform, say) are not JSON: they are written as null."""
    import json

    from segcli.io.outputs import json_bytes, json_line

    doc = {"a": float("nan"), "b": [float("inf"), 1.5, {"c": -float("inf")}], "d": "x"}

    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    for text in (json_bytes(doc).decode(), json_line(doc)):
        assert json.loads(text, parse_constant=refuse) == {"a": None, "b": [None, 1.5, {"c": None}], "d": "x"}
