"""Batch prediction: decode ahead in threads, run same-size images together, write outputs in a thread.

Every output is written atomically, the palette PNG last, carrying a fingerprint of the model and the
parameters in a PNG text chunk: an image whose PNG has the current fingerprint (and whose other requested
outputs exist) was finished by an earlier run and is skipped, so a killed run restarted with the same
command does only the rest. A failure (unreadable image, unwritable output) is recorded and the batch
goes on.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import engine
from .api import Segmenter
from .errors import SegcliError
from .images import DEFAULT_MAX_PIXELS, load_image
from .inputs import Item
from .outputs import (
    PREDICTION_SCHEMA,
    RUN_SCHEMA,
    atomic_write_bytes,
    class_counts,
    class_stats,
    index_png,
    json_bytes,
    label_png,
    overlay_jpeg,
    probs_npy,
    read_fingerprint,
    topk_npz,
)
from .presets import Params


@dataclass(frozen=True)
class Options:
    out: Path
    save: frozenset[str] = frozenset({"json"})  # besides the palette PNG: label, overlay, probs, json
    alpha: float = 0.5  # overlay opacity of the class colours
    topk: int | None = None  # probs: only the k most probable classes (.npz) instead of all (.npy)
    overwrite: bool = False
    batch_size: int = 1  # same-size images per forward pass
    max_pixels: int = DEFAULT_MAX_PIXELS
    decoders: int = 2  # decoding threads


@dataclass
class RunResult:
    total: int = 0
    done: int = 0
    skipped: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)
    class_pixels: np.ndarray | None = None
    seconds: float = 0.0
    interrupted: bool = False


def model_record(seg: Segmenter) -> dict[str, Any]:
    o = seg.info.origin
    return {"name": seg.info.name, "source": o.kind, "repo": o.repo, "revision": o.revision,
            "sha256": o.sha256, "path": o.path}  # fmt: skip


def fingerprint(model: dict[str, Any], params: Params, opts: Options) -> str:
    """What makes two runs' outputs interchangeable: weights, inference parameters, what is saved."""
    what = {"model": model.get("sha256") or model, "inference": params.to_json(), "save": sorted(opts.save),
            "alpha": opts.alpha if "overlay" in opts.save else None, "topk": opts.topk}  # fmt: skip
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:32]


def output_paths(item: Item, opts: Options) -> dict[str, Path]:
    base = opts.out / item.name.parent
    stem = item.name.name
    paths = {"png": base / f"{stem}.png"}
    if "label" in opts.save:
        paths["label"] = base / f"{stem}_label.png"
    if "overlay" in opts.save:
        paths["overlay"] = base / f"{stem}_overlay.jpg"
    if "probs" in opts.save:
        paths["probs"] = base / (f"{stem}_top{opts.topk}.npz" if opts.topk else f"{stem}_probs.npy")
    if "json" in opts.save:
        paths["json"] = base / f"{stem}.json"
    return paths


def finished_before(paths: dict[str, Path], fp: str) -> bool:
    return read_fingerprint(paths["png"]) == fp and all(p.is_file() for p in paths.values())


class _Writer:
    """Encodes and writes one image's outputs (runs in the writer thread)."""

    def __init__(self, seg: Segmenter, params: Params, opts: Options, model: dict[str, Any], fp: str) -> None:
        self.seg, self.params, self.opts, self.model, self.fp = seg, params, opts, model, fp
        self.inference = params.to_json()

    def __call__(self, item: Item, paths: dict[str, Path], image: np.ndarray, pred: engine.Prediction,
                 timings: dict[str, float]) -> tuple[dict[str, Any], np.ndarray | None]:  # fmt: skip
        seg, opts = self.seg, self.opts
        labels = pred.labels
        h, w = labels.shape
        counts = class_counts(labels, seg.num_classes)
        record = {
            "schema": PREDICTION_SCHEMA, "input": str(item.path), "name": item.name.as_posix(),
            "image": {"width": int(w), "height": int(h)}, "model": self.model, "preset": self.params.preset,
            "inference": self.inference, "classes": class_stats(counts, seg.classes),
            "outputs": {k: str(p) for k, p in paths.items()}, "fingerprint": self.fp,
        }  # fmt: skip
        try:
            t = time.perf_counter()
            if "label" in paths:
                atomic_write_bytes(paths["label"], index_png(labels, seg.num_classes))
            if "overlay" in paths:
                atomic_write_bytes(paths["overlay"], overlay_jpeg(image, labels, seg.palette, opts.alpha))
            if "probs" in paths:
                data = topk_npz(pred.probs, opts.topk) if opts.topk else probs_npy(pred.probs)
                atomic_write_bytes(paths["probs"], data)
            record["timings"] = {**timings, "write_s": time.perf_counter() - t}
            if "json" in paths:
                atomic_write_bytes(paths["json"], json_bytes(record))
            atomic_write_bytes(paths["png"], label_png(labels, seg.palette, self.fp))  # last: marks done
        except OSError as e:
            return _failed(item, f"{item.path}: cannot write outputs under {opts.out} ({e.strerror or e})"), None
        record["timings"]["write_s"] = time.perf_counter() - t
        return {**record, "status": "done", "error": None}, counts


def _failed(item: Item, reason: str) -> dict[str, Any]:
    return {"schema": PREDICTION_SCHEMA, "input": str(item.path), "name": item.name.as_posix(),
            "status": "failed", "error": reason}  # fmt: skip


def _skipped(item: Item, paths: dict[str, Path]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    record = {"schema": PREDICTION_SCHEMA, "input": str(item.path), "name": item.name.as_posix(),
              "status": "skipped", "error": None, "outputs": {k: str(p) for k, p in paths.items()}}  # fmt: skip
    previous = None
    if "json" in paths:
        try:
            previous = json.loads(paths["json"].read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
    return record, previous


def run(
    seg: Segmenter,
    items: list[Item],
    params: Params,
    opts: Options,
    *,
    report: Callable[[dict[str, Any]], None] = lambda record: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> RunResult:
    """Segment `items` into `opts.out`; `report` gets every image's record (done / skipped / failed) in
    input order; `should_stop` is polled between batches (Ctrl-C finishes the images in flight)."""
    model = model_record(seg)
    fp = fingerprint(model, params, opts)
    k = seg.num_classes
    result = RunResult(total=len(items), class_pixels=np.zeros(k, dtype=np.int64))
    inputs = {it.path.resolve() for it in items}
    start = time.perf_counter()

    def finish(record: dict[str, Any], counts: np.ndarray | None) -> None:
        if record["status"] == "done":
            result.done += 1
            result.class_pixels += counts
        elif record["status"] == "skipped":
            result.skipped += 1
        else:
            result.failures.append({"input": record["input"], "error": record["error"]})
        report(record)

    def ready(record: dict[str, Any], counts: np.ndarray | None = None) -> Future:
        fut: Future = Future()
        fut.set_result((record, counts))
        return fut

    # (item, paths, a finished record — skipped or refused — or None when the image must be processed)
    entries: list[tuple[Item, dict[str, Path], Future | None]] = []
    for item in items:
        paths = output_paths(item, opts)
        if any(p.resolve() in inputs for p in paths.values()):
            reason = f"{item.path}: its output would overwrite an input image; choose another --out"
            entries.append((item, paths, ready(_failed(item, reason))))
        elif not opts.overwrite and finished_before(paths, fp):
            record, previous = _skipped(item, paths)
            for c in (previous or {}).get("classes", []):
                if 0 <= c.get("index", -1) < k:
                    result.class_pixels[c["index"]] += int(c.get("pixels", 0))
            entries.append((item, paths, ready(record)))
        else:
            entries.append((item, paths, None))

    write = _Writer(seg, params, opts, model, fp)
    want_probs = "probs" in opts.save

    def decode(item: Item) -> tuple[np.ndarray, float]:
        t = time.perf_counter()
        return load_image(item.path, max_pixels=opts.max_pixels), time.perf_counter() - t

    with ThreadPoolExecutor(opts.decoders, "segcli-decode") as decoders, ThreadPoolExecutor(1, "segcli-write") as writer:
        queue: deque[tuple[Item, dict[str, Path], Future, bool]] = deque()  # (…, future, is a decode)
        writes: deque[Future] = deque()  # records in input order
        upcoming = iter(entries)
        decoding = 0

        def fill() -> None:
            nonlocal decoding
            while decoding < opts.batch_size + opts.decoders:
                nxt = next(upcoming, None)
                if nxt is None:
                    return
                item, paths, done = nxt
                if done is None:
                    queue.append((item, paths, decoders.submit(decode, item), True))
                    decoding += 1
                else:
                    queue.append((item, paths, done, False))

        def drain(block: bool) -> None:
            while writes and (block or writes[0].done()):
                finish(*writes.popleft().result())

        fill()
        while queue and not should_stop():
            batch: list[tuple[Item, dict[str, Path], np.ndarray, float]] = []
            while queue and len(batch) < opts.batch_size:
                item, paths, fut, is_decode = queue[0]
                if not is_decode:  # a finished record keeps its place in the order
                    if batch:
                        break
                    queue.popleft()
                    writes.append(fut)
                    fill()
                    continue
                try:
                    image, t_decode = fut.result()
                except SegcliError as e:
                    if batch:
                        break
                    queue.popleft()
                    decoding -= 1
                    writes.append(ready(_failed(item, str(e))))
                    fill()
                    continue
                if batch and image.shape != batch[0][2].shape:
                    break  # a different size starts the next batch
                queue.popleft()
                decoding -= 1
                batch.append((item, paths, image, t_decode))
                fill()
            if batch:
                t = time.perf_counter()
                preds = engine.predict_many(seg.model, [b[2] for b in batch], params, probs=want_probs)
                t_infer = (time.perf_counter() - t) / len(batch)
                for (item, paths, image, t_decode), pred in zip(batch, preds):
                    timings = {"decode_s": t_decode, "inference_s": t_infer}
                    writes.append(writer.submit(write, item, paths, image, pred, timings))
            drain(block=False)
        result.interrupted = bool(queue) or next(upcoming, None) is not None
        for _, _, fut, _ in queue:
            fut.cancel()
        drain(block=True)
    result.seconds = time.perf_counter() - start
    return result


def summary(
    result: RunResult, seg: Segmenter, params: Params, opts: Options, extra: dict[str, Any]
) -> dict[str, Any]:
    """The run's summary.json: parameters, counts, per-class totals, failures, throughput."""
    return {
        "schema": RUN_SCHEMA,
        "model": model_record(seg),
        "preset": params.preset,
        "inference": params.to_json(),
        "save": sorted(opts.save),
        **extra,
        "counts": {"total": result.total, "done": result.done, "skipped": result.skipped,
                   "failed": len(result.failures)},  # fmt: skip
        "interrupted": result.interrupted,
        "classes": class_stats(result.class_pixels, seg.classes) if result.class_pixels is not None else [],
        "failures": result.failures,
        "seconds": result.seconds,
        "images_per_second": result.done / result.seconds if result.seconds > 0 else None,
    }
