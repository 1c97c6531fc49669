"""A batch run: plan the items, run the pipeline over the segmenter, collect the records into a summary."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..engine.presets import Params
from ..errors import ImageError
from ..io.images import decode_image, image_size, load_image
from ..io.inputs import Item
from ..loading.info import ModelInfo
from .pipeline import Pipeline
from .plan import Options, Task, fingerprint, plan
from .records import ImageRecord, RunRecord, RunSummary
from .video import Frames
from .writer import Writer

if TYPE_CHECKING:
    from ..api import Segmenter


PROBS_LIMIT_BYTES = 4 << 30  # --save probs holds a float16 [K, H, W] array per image: at most 4 GiB


def _decode(opts: Options, num_classes: int, frames: Frames, task: Task) -> Any:
    """The image (a video's frame), after checking (from its header) that its probabilities would fit the
    limit; a raster that needs GDAL opened instead (see `batch.raster`)."""
    from .raster import open_raster

    if task.item.remote is not None:
        from ..io.remote import read

        image = decode_image(read(task.item.remote, opts.remote), task.item.source, max_pixels=opts.max_pixels)
        _check_probs(opts, num_classes, task, image.shape[1], image.shape[0])
        return image
    if task.item.frame is not None:
        image = frames.decode(task.item)
        _check_probs(opts, num_classes, task, image.shape[1], image.shape[0])
        return image
    raster = open_raster(task.item.path, opts)
    if raster is not None:
        return raster
    if "probs" in opts.save:
        _check_probs(opts, num_classes, task, *image_size(task.item.path))
    return load_image(task.item.path, max_pixels=opts.max_pixels)


def _check_probs(opts: Options, num_classes: int, task: Task, w: int, h: int) -> None:
    if "probs" in opts.save:
        need = 2 * num_classes * w * h
        if need > PROBS_LIMIT_BYTES:
            raise ImageError(
                f"{task.item.source}: --save probs would hold {need / 2**30:.1f} GiB for this {w}x{h} image "
                f"({num_classes} classes, float16); the limit is {PROBS_LIMIT_BYTES >> 30} GiB per image",
                hint="leave probs out of --save for images this large, or shrink them first",
            )


def write_run_files(out: Path, info: ModelInfo) -> None:
    """`legend.png` and `classes.json` at the top of `out`: the model's classes and colours (each map's)."""
    from ..fsutil import atomic_write_bytes
    from ..io.legend import classes_doc, legend_png
    from ..io.outputs import json_bytes

    maps = [(f"{head}s ({len(s.classes)})", s) for head, s in info.head_sets.items() if head != "scene"]
    sets = [(f"{'objects' if maps else 'classes'} ({len(info.classes)})", info.class_set), *maps]
    atomic_write_bytes(out / "legend.png", legend_png(sets))
    atomic_write_bytes(out / "classes.json", json_bytes(classes_doc(info.name, info.class_set, info.head_sets)))


def pipeline(
    seg: Segmenter,
    params: Params,
    opts: Options,
    run: RunRecord | None = None,
    on_windows: Callable[[int, int], None] | None = None,
) -> Pipeline:
    """The pipeline that segments tasks with `seg` (what `run` uses, and each worker of a Ray run); `run`:
    the record the outputs carry (default: `seg` with `params` here; a Ray driver plans for its workers)."""
    from .raster import RasterStream

    run = run or RunRecord.of(seg, params)
    write = Writer(seg.info.class_set, opts, run.details(), fingerprint(run, opts), seg.info.head_sets)
    frames = Frames(opts.max_pixels)
    return Pipeline(
        decode=partial(_decode, opts, seg.num_classes, frames),
        infer=partial(
            seg.run_many,
            params=params,
            probs="probs" in opts.save,
            progress=on_windows,
            confidence=bool(opts.save & {"confidence", "entropy"}),
        ),
        write=write,
        batch_size=opts.batch_size,
        decoders=opts.decoders,
        stream=RasterStream(seg, params, opts, write, on_windows),
        prepare=frames.want,
        release=frames.close,
    )


def run(
    seg: Segmenter,
    items: list[Item],
    params: Params,
    opts: Options,
    *,
    report: Callable[[ImageRecord], None] = lambda record: None,
    should_stop: Callable[[], bool] = lambda: False,
    summary: RunSummary | None = None,
    on_windows: Callable[[int, int], None] | None = None,
) -> RunSummary:
    """Segment `items` into `opts.out` here; `report` gets every image's record (done / skipped / failed) in
    input order; `should_stop` is polled between batches (Ctrl-C finishes the images in flight);
    `on_windows(done, total)`: progress within the images in the model (windows of every view). Records are added to `summary`
    (a new one when not given), which is returned. `segcli.batch.predict` is the whole workflow around it."""
    start = time.perf_counter()
    record = RunRecord.of(seg, params)
    tasks = plan(items, opts, fingerprint(record, opts), seg.num_classes)
    totals = summary if summary is not None else RunSummary(tuple(seg.classes), seg.scenes)
    totals.total += len(items)

    def emit(image: ImageRecord) -> None:
        totals.add(image)
        report(image)

    totals.interrupted = pipeline(seg, params, opts, record, on_windows).run(tasks, emit, should_stop)
    totals.seconds += time.perf_counter() - start
    return totals
