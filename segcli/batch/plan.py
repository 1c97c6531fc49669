"""What a batch run will do with each input, decided before any model runs: process, skip or refuse.

An image is *skipped* when an earlier run finished it with the same fingerprint (model, inference
parameters, what is saved): its palette PNG carries that fingerprint in a text chunk and every other
requested output exists. It is *refused* when one of its outputs would overwrite an input image.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..fsutil import read_regular
from ..io import layout
from ..io.images import DEFAULT_MAX_PIXELS
from ..io.inputs import Item
from ..io.outputs import read_fingerprint
from ..io.raster import RasterOptions, gdal_reads
from ..io.remote import RemoteOptions
from .records import ImageRecord, RunRecord, frame_of


@dataclass(frozen=True)
class Options:
    out: Path
    save: frozenset[str] = frozenset({"json"})  # besides the palette PNG: layout.OPTIONAL
    alpha: float = 0.5  # overlay opacity of the class colours
    topk: int | None = None  # probs: only the k most probable classes (.npz) instead of all (.npy)
    overwrite: bool = False
    batch_size: int = 1  # same-size images per forward pass
    max_pixels: int = DEFAULT_MAX_PIXELS
    decoders: int = 2  # decoding threads
    legend: bool = True  # overlays list the classes present under the image
    report: bool = False  # thumbnails for the HTML report (not outputs: no part of the fingerprint)
    raster: RasterOptions = field(default_factory=RasterOptions)  # bands and value scaling of rasters read through GDAL
    overviews: bool = False  # --save geotiff: internal overviews
    labelstudio: tuple[str, str, str] = ("tag", "image", "")  # --save labelstudio: from_name, to_name, image prefix
    vector: tuple[str, str, float] = ("geojson", "0", 0.0)  # --save vector: format, --min-area, --simplify
    low_confidence: float = 0.5  # --save confidence / entropy: the JSON's uncertain_fraction counts pixels below it
    remote: RemoteOptions = field(default_factory=RemoteOptions)  # how URLs are read (timeouts, retries, size)
    publish: str | None = None  # -o URL: `out` is its staging folder, every output is uploaded (batch.outbox)

    @property
    def published(self) -> tuple[str, str] | None:
        """What records of a run that uploads carry: (staging folder, URL prefix)."""
        return (str(self.out), self.publish.rstrip("/")) if self.publish else None


@dataclass(frozen=True)
class Task:
    item: Item
    paths: dict[str, Path]  # output kind → file
    record: ImageRecord | None = None  # decided already (skipped / refused); None: to be processed


def fingerprint(run: RunRecord, opts: Options) -> str:
    """What makes two runs' outputs interchangeable: weights, inference parameters and runtime (dtype,
    device type, backend), what is saved."""
    what = {
        "model": run.model.get("sha256") or run.model,
        "inference": run.inference,
        "save": sorted(opts.save - {"video"}),  # a video's own files: made from the frames' outputs
        "alpha": opts.alpha if "overlay" in opts.save else None,
        **({"legend": opts.legend} if "overlay" in opts.save else {}),  # only with overlays: other runs resume
        "topk": opts.topk,
        **_raster(opts.raster),
        **({"overviews": True} if opts.overviews and "geotiff" in opts.save else {}),
        **({"low_confidence": opts.low_confidence} if opts.save & {"confidence", "entropy"} else {}),
        **({"labelstudio": list(opts.labelstudio)} if "labelstudio" in opts.save else {}),
        **({"vector": list(opts.vector)} if "vector" in opts.save else {}),
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:32]


def item_fingerprint(fp: str, item: Item) -> str:
    """The run's fingerprint `fp`, and for an object read from a URL its version (ETag or last-modified):
    a changed object is segmented again."""
    version = item.remote.version if item.remote is not None else None
    return fp if version is None else hashlib.sha256(f"{fp}\0{version}".encode()).hexdigest()[:32]


def _raster(options: RasterOptions) -> dict[str, object]:
    """The raster options that change values (runs without any keep resuming; --trust-vrt changes none)."""
    computed = replace(options, trust_vrt=False)
    return (
        {"raster": {k: v for k, v in asdict(computed).items() if k != "trust_vrt"}}
        if computed != RasterOptions()
        else {}
    )


def output_paths(item: Item, opts: Options) -> dict[str, Path]:
    gpkg = opts.vector[0] == "gpkg"
    raster = item.remote is None and gdal_reads(item.path)  # objects from URLs: decoded whole by Pillow
    return layout.output_paths(opts.out, item.name, opts.save, opts.topk, raster=raster, gpkg=gpkg)


def finished_before(paths: dict[str, Path], fp: str) -> bool:
    return read_fingerprint(paths["png"]) == fp and all(p.is_file() for p in paths.values())


def _earlier(paths: dict[str, Path], num_classes: int) -> tuple[np.ndarray | None, int | None, float | None]:
    """Class pixel counts, the top scene and the uncertain fraction recorded in a finished image's JSON (for
    the run's totals and the report), if it has one that reads as segcli wrote it; anything else counts
    nothing (the file is data, not truth)."""
    if "json" not in paths:
        return None, None, None
    try:
        previous = json.loads(read_regular(paths["json"], 64 << 20))
    except (OSError, ValueError, RecursionError):
        return None, None, None
    previous = previous if isinstance(previous, dict) else {}
    classes = previous.get("classes")
    counts = np.zeros(num_classes, dtype=np.int64)
    for c in classes if isinstance(classes, list) else []:
        index, pixels = (c.get("index"), c.get("pixels")) if isinstance(c, dict) else (None, None)
        if type(index) is int and type(pixels) is int and 0 <= index < num_classes and 0 <= pixels < 1 << 62:
            counts[index] += pixels
    scene = previous.get("scene")
    top = scene[0].get("index") if isinstance(scene, list) and scene and isinstance(scene[0], dict) else None
    conf = previous.get("confidence")
    frac = conf.get("uncertain_fraction") if isinstance(conf, dict) else None
    uncertain = (
        float(frac) if isinstance(frac, (int, float)) and not isinstance(frac, bool) and 0 <= frac <= 1 else None
    )
    return counts, top if type(top) is int else None, uncertain


def plan(items: list[Item], opts: Options, fp: str, num_classes: int) -> list[Task]:
    """One task per item, in order."""
    inputs = {it.path.resolve() for it in items if it.remote is None}
    tasks = []
    for item in items:
        paths = output_paths(item, opts)
        name = item.name.as_posix()
        if opts.publish and item.remote is None and gdal_reads(item.path):
            reason = f"{item.source}: outputs of GDAL rasters are not uploaded yet; give a local --out for them"
            tasks.append(Task(item, paths, ImageRecord.failed(item.source, name, reason, item)))
        elif any(p.resolve() in inputs for p in paths.values()):
            reason = f"{item.source}: its output would overwrite an input image; choose another --out"
            tasks.append(Task(item, paths, ImageRecord.failed(item.source, name, reason, item)))
        elif not opts.overwrite and not opts.publish and finished_before(paths, item_fingerprint(fp, item)):
            record = ImageRecord(
                item.source, name, "skipped", outputs=paths, frame=frame_of(item), published=opts.published
            )
            record.counts, record.scene, record.uncertain = _earlier(paths, num_classes)
            tasks.append(Task(item, paths, record))
        else:
            tasks.append(Task(item, paths))
    return _in_the_bucket(tasks, opts, fp, num_classes) if opts.publish and not opts.overwrite else tasks


def _in_the_bucket(tasks: list[Task], opts: Options, fp: str, num_classes: int) -> list[Task]:
    """`tasks` with those finished in the bucket `-o URL` names skipped (batch.outbox): the bucket, not the
    staging folder, says what is done (the staging copy only gives the totals, when it is this run's)."""
    from .outbox import Outbox

    assert opts.publish is not None
    box = Outbox(opts.publish.rstrip("/"), opts.out, opts.remote)
    done = box.finished([(t.paths, item_fingerprint(fp, t.item)) for t in tasks if t.record is None])
    out = []
    for t in tasks:
        if t.record is None and t.paths["png"] in done:
            name = t.item.name.as_posix()
            record = ImageRecord(t.item.source, name, "skipped", outputs=t.paths, frame=frame_of(t.item))
            record.published = opts.published
            if read_fingerprint(t.paths["png"]) == item_fingerprint(fp, t.item):
                record.counts, record.scene, record.uncertain = _earlier(t.paths, num_classes)
            t = Task(t.item, t.paths, record)
        out.append(t)
    return out
