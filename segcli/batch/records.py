"""The records a batch run produces, each with its JSON form written once here.

`RunRecord`: what made every output of a run (weights, preset, inference parameters and runtime), built once
per run. `ImageRecord`: one input's outcome; its `to_json()` is the `--jsonl` line, `file_json()` the
`<stem>.json` file (the same without status and error). `RunSummary`: the run's `summary.json`, accumulated
from the records.

    done     schema, input, name, [frame], [source: a URL's], image, model, preset, inference, software, [raster], classes, [materials,
             parts, scene: a parsing model's], outputs, fingerprint, timings, status, error
    skipped  schema, input, name, [frame], status, error, outputs
    failed   schema, input, name, [frame], status, error
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..io.outputs import class_stats
from ..loading.info import ModelInfo
from ..versions import software

if TYPE_CHECKING:
    from ..api import Segmenter
    from ..engine.presets import Params
    from ..io.inputs import Item
    from ..io.remote import RemoteObject

PREDICTION_SCHEMA = "segcli.prediction/1"
RUN_SCHEMA = "segcli.run/1"  # inputs.RUN_SCHEMA recognises earlier runs by it


def model_record(info: ModelInfo) -> dict[str, Any]:
    """Which weights made an output (name, source kind, repo, revision, sha256, path)."""
    o = info.origin
    return {
        "name": info.name,
        "source": o.kind,
        "repo": o.repo,
        "revision": o.revision,
        "sha256": o.sha256,
        "path": o.path,
    }


def frame_of(item: Item | None) -> dict[str, Any] | None:
    """A video frame's record entry: its number and timestamp (None for other inputs)."""
    if item is None or item.frame is None:
        return None
    return {"index": item.frame, "time_s": round(item.time or 0.0, 6)}


def source_of(obj: RemoteObject) -> dict[str, Any]:
    """An object read from a URL, as its record names it: the URL, its ETag or last-modified, its size."""
    from ..io.remote import redact

    kind, _, value = (obj.version or "").partition(":")
    return {
        "url": redact(obj.url),
        "etag": value if kind == "etag" else None,
        "last_modified": value if kind == "modified" else None,
        "bytes": obj.size,
    }


@dataclass(frozen=True)
class RunRecord:
    """What made a run's outputs, the same for every image: the weights, the preset, the inference parameters
    and the runtime (dtype, device type, backend). The fingerprint, every image's JSON and summary.json use it."""

    model: dict[str, Any]
    preset: str
    inference: dict[str, Any]

    @classmethod
    def of(cls, seg: Segmenter, params: Params, runtime: dict[str, Any] | None = None) -> RunRecord:
        """`seg` run with `params`; `runtime` replaces parts of the runtime (a Ray driver plans for its workers)."""
        return cls(model_record(seg.info), params.preset, {**seg.inference(params), **(runtime or {})})

    def details(self) -> dict[str, Any]:
        """The part of every image's JSON that this record gives."""
        return {"model": self.model, "preset": self.preset, "inference": self.inference, "software": software()}


@dataclass
class ImageRecord:
    input: str
    name: str | None
    status: str  # "done" | "skipped" | "failed"
    error: str | None = None
    outputs: dict[str, Path] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # done: image, model, preset, inference, classes
    fingerprint: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    counts: np.ndarray | None = None  # pixels per class (done, or skipped with an earlier JSON); not in the JSON
    scene: int | None = None  # a parsing model's most probable scene (likewise)
    uncertain: float | None = None  # --save confidence: the fraction of pixels below --low-confidence (likewise)
    frame: dict[str, Any] | None = None  # a video's frame: {"index", "time_s"} (every status)
    published: tuple[str, str] | None = None  # outputs uploaded (batch.outbox): (staging folder, URL prefix)

    @classmethod
    def failed(cls, input: str, name: str | None, error: str, item: Item | None = None) -> ImageRecord:
        return cls(input, name, "failed", error, frame=frame_of(item))

    @property
    def key(self) -> str:
        """`Item.key` of the input this record is about."""
        return self.input if self.frame is None else f"{self.input}#{self.frame['index']}"

    @classmethod
    def done(
        cls,
        item: Item,
        paths: dict[str, Path],
        run: dict[str, Any],
        fingerprint: str,
        size: tuple[int, int],
        counts: np.ndarray,
        classes: list[dict[str, Any]],
        *,
        raster: dict[str, Any] | None = None,
        heads: dict[str, Any] | None = None,
    ) -> ImageRecord:
        """A finished image (photo or raster): `run` is `RunRecord.details()`, `size` (H, W), `counts` the pixels
        per class and `classes` their JSON; `raster` its georeference, `heads` a parser's other heads."""
        details = {
            **({"source": source_of(item.remote)} if item.remote is not None else {}),
            "image": {"width": int(size[1]), "height": int(size[0])},
            **run,
            **({"raster": raster} if raster is not None else {}),
            "classes": classes,
            **(heads or {}),
        }
        scene = details["scene"][0]["index"] if details.get("scene") else None
        uncertain = details["confidence"]["uncertain_fraction"] if details.get("confidence") else None
        name = item.name.as_posix()
        return cls(
            item.source, name, "done", None, paths, details, fingerprint, counts=counts, scene=scene,
            uncertain=uncertain, frame=frame_of(item),
        )  # fmt: skip

    def to_wire(self) -> dict[str, Any]:
        """`to_json` plus what the JSON leaves out (class counts, top scene): a record sent between processes."""
        counts = None if self.counts is None else self.counts.tolist()
        local = {k: str(p) for k, p in self.outputs.items()}
        wire = {"_counts": counts, "_scene": self.scene, "_uncertain": self.uncertain, "_outputs": local}
        return {**self.to_json(), **wire, "_published": list(self.published) if self.published else None}

    @classmethod
    def from_wire(cls, doc: dict[str, Any]) -> ImageRecord:
        """The inverse of `to_wire`."""
        fixed = {
            "schema", "input", "name", "frame", "status", "error", "outputs", "fingerprint", "timings", "_counts",
            "_scene", "_uncertain", "_outputs", "_published",
        }  # fmt: skip
        published = doc.get("_published")
        counts = doc.get("_counts")
        return cls(
            doc["input"],
            doc["name"],
            doc["status"],
            doc.get("error"),
            {k: Path(v) for k, v in (doc.get("_outputs", doc.get("outputs")) or {}).items()},
            {k: v for k, v in doc.items() if k not in fixed},
            doc.get("fingerprint"),
            doc.get("timings") or {},
            None if counts is None else np.asarray(counts, dtype=np.int64),
            doc.get("_scene"),
            doc.get("_uncertain"),
            doc.get("frame"),
            (str(published[0]), str(published[1])) if published else None,
        )

    def outputs_json(self) -> dict[str, str]:
        """The outputs as the JSON names them: paths, or the URLs they were uploaded to."""
        if self.published is None:
            return {k: str(p) for k, p in self.outputs.items()}
        root, url = Path(self.published[0]), self.published[1]
        return {k: f"{url}/{p.relative_to(root).as_posix()}" for k, p in self.outputs.items()}

    def file_json(self) -> dict[str, Any]:
        """The `<stem>.json` written beside a finished image's PNG."""
        return {
            "schema": PREDICTION_SCHEMA,
            "input": self.input,
            "name": self.name,
            **self.frame_json(),
            **self.details,
            "outputs": self.outputs_json(),
            "fingerprint": self.fingerprint,
            "timings": self.timings,
        }

    def frame_json(self) -> dict[str, Any]:
        return {"frame": self.frame} if self.frame is not None else {}

    def to_json(self) -> dict[str, Any]:
        """The record streamed with `--jsonl` (and handed to `report` callbacks)."""
        if self.status == "done":
            return {**self.file_json(), "status": "done", "error": None}
        doc: dict[str, Any] = {
            "schema": PREDICTION_SCHEMA,
            "input": self.input,
            "name": self.name,
            **self.frame_json(),
            "status": self.status,
            "error": self.error,
        }
        if self.status == "skipped":
            doc["outputs"] = self.outputs_json()
        return doc


@dataclass
class RunSummary:
    """Totals of a run, fed record by record; `to_json()` is summary.json."""

    classes: tuple[str, ...]
    scenes: tuple[str, ...] = ()  # a parsing model's scene classes: images are counted by top scene
    total: int = 0
    done: int = 0
    skipped: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)
    class_pixels: np.ndarray = field(init=False)
    seconds: float = 0.0  # segmenting (the runner's time)
    wall_seconds: float = 0.0  # the whole run until its summary: loading, choosing the backend, segmenting
    setup_seconds: dict[str, float] = field(default_factory=dict)  # load_model, choose_backend
    interrupted: bool = False
    run: RunRecord | None = None  # what made the outputs
    backend: dict[str, Any] | None = None  # the backend chosen and why (`backends.Choice.to_json`)
    extra: dict[str, Any] = field(default_factory=dict)  # more of summary.json: inputs, shard, out
    run_errors: list[str] = field(default_factory=list)  # run-level files that could not be written
    # the per-image files run-level ones are made of (done or skipped): kind ("coco", "labelstudio") → input → file
    collected: dict[str, dict[str, Path]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.class_pixels = np.zeros(len(self.classes), dtype=np.int64)
        self.scene_images = np.zeros(len(self.scenes), dtype=np.int64)
        self.stage_seconds: dict[str, float] = {}  # decode_s, inference_s, write_s summed over done images

    def add(self, record: ImageRecord) -> None:
        if record.status == "done":
            self.done += 1
        elif record.status == "skipped":
            self.skipped += 1
        else:
            self.failures.append({"input": record.input, **record.frame_json(), "error": record.error or ""})
        if record.status == "done":
            for stage, seconds in record.timings.items():
                if isinstance(seconds, (int, float)):
                    self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + float(seconds)
        if record.counts is not None and record.status != "failed":
            self.class_pixels += record.counts
        for kind in ("coco", "labelstudio"):
            if record.status != "failed" and kind in record.outputs:
                self.collected.setdefault(kind, {})[record.key] = record.outputs[kind]
        if record.scene is not None and record.status != "failed" and 0 <= record.scene < len(self.scenes):
            self.scene_images[record.scene] += 1

    def to_json(self, save: Iterable[str]) -> dict[str, Any]:
        """summary.json (`save`: the output kinds asked for)."""
        run = self.run or RunRecord({}, "", {})
        return {
            "schema": RUN_SCHEMA,
            "model": run.model,
            "preset": run.preset,
            "inference": run.inference,
            "save": sorted(save),
            "software": software(),
            **self.extra,
            "backend": self.backend,
            "counts": {"total": self.total, "done": self.done, "skipped": self.skipped, "failed": len(self.failures)},
            "interrupted": self.interrupted,
            "classes": class_stats(self.class_pixels, list(self.classes)),
            **({"scenes": self._scenes()} if self.scenes else {}),
            "failures": self.failures,
            "seconds": self.seconds,
            "images_per_second": self.done / self.seconds if self.seconds > 0 else None,
            "wall_seconds": self.wall_seconds,
            "setup_seconds": self.setup_seconds,
            "timings": self._timings(),
        }

    def _timings(self) -> dict[str, Any]:
        """Where the time went: each stage's seconds summed over the done images, its share of their sum, and
        per image. Decoding and writing overlap inference (threads), so the sum can exceed `seconds`."""
        total = sum(self.stage_seconds.values())
        return {
            stage: {
                "seconds": s,
                "share": s / total if total > 0 else None,
                "per_image": s / self.done if self.done else None,
            }
            for stage, s in sorted(self.stage_seconds.items())
        }

    def _scenes(self) -> list[dict[str, Any]]:
        """Scenes that are some image's most probable, most images first."""
        n = self.scene_images
        order = sorted((int(i) for i in np.flatnonzero(n)), key=lambda i: (-int(n[i]), i))
        return [{"index": i, "name": self.scenes[i], "images": int(n[i])} for i in order]
