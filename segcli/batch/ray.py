"""Batch prediction on Ray Data (`segcli predict --ray`, `segcli.ray.segment`): the `[ray]` extra.

The driver does what a local run does before any model runs — discovery, output names, the resume
decision per image (`batch.plan`) — and sends only the images to process, as small rows (input path,
output names), through `map_batches` over a pool of actors (`ActorPoolStrategy`). Each actor loads the model
once and runs the local pipeline on its rows: decode, infer, write (atomically, to the shared file system),
returning each image's record. The driver reports the records in input order (Ray Data's `preserve_order`),
sums them up and writes `summary.json`, as a local run does.

An actor that dies (a killed process, a lost node) is restarted by Ray and the rows it held are run again:
their files are replaced atomically by the same bytes, and each image is reported once. Temporary files a
killed worker left are removed when the run ends.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import SegcliError, UsageError, first_line
from ..fsutil import remove_stale_temps
from ..io.inputs import Item
from ..io.remote import RemoteObject
from .plan import Options, Task, fingerprint, plan
from .ray_connect import cluster_defaults, connect, data_context, ray_module
from .records import ImageRecord, RunRecord, RunSummary
from .runner import pipeline

if TYPE_CHECKING:
    from ..api import Segmenter
    from ..engine.presets import Params
    from ..loading.class_map import ClassMap


@dataclass(frozen=True)
class Job:
    """What every worker needs to build the same model and pipeline as the driver planned (picklable)."""

    model: str
    device: str  # the workers' device: "cpu" or "cuda"
    dtype: str
    registry: str | None
    params: Params
    opts: Options
    record: RunRecord  # what the driver's fingerprint was made with: the workers' runtime
    threads: int = 1
    extra: dict[str, Any] = field(default_factory=dict)
    cwd: str = ""  # the driver's working folder: relative inputs, --out and --registry are relative to it
    backend: str = (
        "torch"  # torch, compile, onnxruntime or openvino (auto is torch: the driver cannot measure the workers)
    )
    class_map: ClassMap | None = None  # --class-map, as the driver read it


class _Worker:
    """One actor: the model, loaded once; each call runs the local pipeline over a batch of rows."""

    def __init__(self, job: Job) -> None:
        self.job, self.error = job, ""
        try:
            self._load(job)
        except Exception as e:  # noqa: BLE001 - Ray would recreate a failing actor forever: the run stops instead
            hint = f" ({e.hint})" if isinstance(e, SegcliError) and e.hint else ""
            self.error = f"a Ray worker cannot start: {first_line(e)}{hint}"

    def _load(self, job: Job) -> None:
        import torch

        if job.cwd:  # the same relative paths as the driver (a shared file system, mounted alike)
            os.chdir(job.cwd)

        from ..api import Segmenter

        torch.set_num_threads(max(1, job.threads))
        self.seg = Segmenter.from_pretrained(job.model, device=job.device, dtype=job.dtype, registry=job.registry)
        self.seg.use_backend(job.backend, job.params)
        if job.class_map is not None:
            self.seg.map_classes(job.class_map)
        here = RunRecord.of(self.seg, job.params).inference
        if here != job.record.inference:  # another segcli / torch, another device: not the planned outputs
            raise UsageError(
                f"a Ray worker would run with {here}, the driver planned {job.record.inference}",
                hint="install the same segcli and torch on every node, and give --gpus-per-worker as the nodes have",
            )
        self.pipeline = pipeline(self.seg, job.params, job.opts, job.record)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        columns = ("path", "name", "rel", "frame", "time", "url", "bytes", "version", "outputs")
        rows = zip(*(batch[c] for c in columns), strict=True)
        tasks = [
            Task(
                Item(
                    Path(p),
                    PurePosixPath(n),
                    PurePosixPath(r),
                    int(f) if f >= 0 else None,
                    float(t) if f >= 0 else None,
                    RemoteObject(str(u), int(b) if b >= 0 else None, str(v) or None) if u else None,
                ),
                {k: Path(v) for k, v in json.loads(o).items()},
            )
            for p, n, r, f, t, u, b, v, o in rows
        ]
        records: list[ImageRecord] = []
        fatal = self.error
        try:
            if not fatal:
                self.pipeline.run(tasks, records.append)
        except SegcliError as e:  # the model is broken (say, NaN logits on every image): the run stops
            fatal = str(e)
        done = {r.key for r in records}
        for t in tasks:  # every row answers, whatever happened
            if t.item.key not in done:
                records.append(ImageRecord.failed(t.item.source, t.item.name.as_posix(), fatal or "not run", t.item))
        by_key = {r.key: r for r in records}
        return {
            "index": list(batch["index"]),
            "record": [json.dumps(by_key[t.item.key].to_wire()) for t in tasks],
            "fatal": [fatal] * len(tasks),
        }


def _rows(tasks: list[Task]) -> list[dict[str, Any]]:
    return [
        {
            "index": i,
            "path": str(t.item.path),
            "name": t.item.name.as_posix(),
            "rel": t.item.rel.as_posix(),
            "frame": -1 if t.item.frame is None else t.item.frame,  # a video's frame (columns have one type)
            "time": t.item.time or 0.0,
            "url": t.item.remote.url if t.item.remote else "",  # an object read from a URL: by the worker
            "bytes": t.item.remote.size if t.item.remote and t.item.remote.size is not None else -1,
            "version": (t.item.remote.version or "") if t.item.remote else "",
            "outputs": json.dumps({k: str(v) for k, v in t.paths.items()}),
        }
        for i, t in enumerate(tasks)
        if t.record is None
    ]


def _stream(job: Job, rows: list[dict[str, Any]], workers: int, gpus: float) -> Iterator[tuple[int, ImageRecord]]:
    ray = ray_module()
    data_context()
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 4 * workers)))
    out = ds.map_batches(
        _Worker,
        fn_constructor_kwargs={"job": job},
        batch_size=max(4, job.opts.batch_size),
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=job.threads,
        num_gpus=gpus,
        batch_format="numpy",
    )
    for row in out.iter_rows():
        if row["fatal"]:
            raise SegcliError(str(row["fatal"]))
        yield int(row["index"]), ImageRecord.from_wire(json.loads(row["record"]))


def run(
    seg: Segmenter,
    job: Job,
    items: list[Item],
    *,
    workers: int,
    gpus: float,
    report: Callable[[ImageRecord], None],
    should_stop: Callable[[], bool],
    summary: RunSummary,
) -> RunSummary:
    """`batch.run` on Ray: plan here, process on the actors, records in input order to `report`."""
    start = time.perf_counter()
    tasks = plan(items, job.opts, fingerprint(job.record, job.opts), seg.num_classes)
    summary.total += len(items)
    results = _stream(job, _rows(tasks), workers, gpus) if any(t.record is None for t in tasks) else iter(())
    try:
        for i, task in enumerate(tasks):
            if should_stop():
                summary.interrupted = True
                break
            record = task.record
            if record is None:
                index, record = next(results)
                assert index == i, "Ray returned the records out of order"
            summary.add(record)
            report(record)
    finally:
        if hasattr(results, "close"):
            results.close()
        for folder in {p.parent for t in tasks for p in t.paths.values()}:
            remove_stale_temps(folder)  # what killed workers left behind
    summary.seconds += time.perf_counter() - start
    return summary


def job_for(
    seg: Segmenter,
    model: str,
    params: Params,
    opts: Options,
    *,
    gpus: float,
    threads: int,
    dtype: str,
    registry: str | None,
    backend: str = "torch",
) -> Job:
    """The workers' job: the driver's parameters, with the runtime the workers will record."""
    from ..api import resolve_dtype

    device = "cuda" if gpus else "cpu"
    if str(dtype).lower() == "auto":  # the driver cannot see the workers' hardware: name a dtype for bf16
        dtype = "float32"
    if seg.backend == "onnxruntime" and hasattr(seg.network, "model_format"):  # an exported file runs as it is
        backend = "onnxruntime"
    elif str(backend).lower() == "auto":  # nor measure them: name a backend for another
        backend = "torch"
    dt = str(resolve_dtype(dtype)).removeprefix("torch.")
    record = RunRecord.of(seg, params, {"device": device, "dtype": dt, "backend": backend.lower()})
    return Job(model, device, dtype, registry, params, opts, record, threads, cwd=os.getcwd(), backend=backend,
               class_map=seg.class_map)  # fmt: skip


def segment(
    dataset: Any, model: str, preset: str | None = None, *, workers: int | None = None, **overrides: Any
) -> Any:
    """A Ray Dataset with an image column (as `ray.data.read_images(..., include_paths=True)` makes: RGB
    uint8 `image`, and `path`) → the same rows plus `labels` ([H, W] class indices) and `record` (JSON: the
    image's classes with pixel counts, the model, the parameters), each actor loading `model` once."""
    ray = ray_module()
    n, gpus, threads = cluster_defaults(overrides.pop("threads", None), overrides.pop("gpus_per_worker", None), workers)
    return dataset.map_batches(
        _Labeller,
        fn_constructor_kwargs={
            "model": model,
            "preset": preset,
            "overrides": overrides,
            "threads": threads,
            "gpu": bool(gpus),
        },
        batch_size=8,
        compute=ray.data.ActorPoolStrategy(size=n),
        num_cpus=threads,
        num_gpus=gpus,
        batch_format="numpy",
    )


class _Labeller:
    """`segment`'s actor: labels and a per-image record for each row's image."""

    def __init__(self, model: str, preset: str | None, overrides: dict[str, Any], threads: int, gpu: bool) -> None:
        import torch

        from ..api import Segmenter

        self.error: Exception | None = None
        try:
            torch.set_num_threads(max(1, threads))
            self.seg = Segmenter.from_pretrained(model, device="cuda" if gpu else "cpu")
            self.params = self.seg.params(preset, **overrides)
            self.record = RunRecord.of(self.seg, self.params)
        except Exception as e:  # noqa: BLE001 - raised with the first batch (Ray would recreate the actor forever)
            self.error = e

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        from ..io.outputs import class_counts, class_stats

        if self.error is not None:
            raise RuntimeError(f"segcli.ray.segment: the model cannot be loaded: {self.error}") from self.error

        images = [np.ascontiguousarray(im) for im in batch["image"]]
        preds = [self.seg.run_many([im], self.params)[0] for im in images]  # one at a time: sizes differ
        records = []
        for p in preds:
            assert p.labels is not None
            counts = class_counts(p.labels, self.seg.num_classes)
            doc: dict[str, Any] = {"model": self.record.model, "inference": self.record.inference}
            doc["classes"] = class_stats(counts, self.seg.classes)
            records.append(json.dumps(doc))
        out = dict(batch)
        out["labels"] = np.array([p.labels for p in preds] + [None], dtype=object)[:-1]
        out["record"] = np.array(records, dtype=object)
        return out


@dataclass
class Cluster:
    """A connection to Ray and the actors' shape (workers × GPUs × threads), for one run."""

    started: bool  # this run initialized Ray: it disconnects at the end (stopping the local Ray it started),
    # while its output still goes where the run's does (Ray prints what it still holds as it shuts down)
    workers: int
    gpus: float
    threads: int

    @classmethod
    def start(cls, address: str, workers: int | None, gpus: float | None, threads: int | None, quiet: bool) -> Cluster:
        """Connect (`address` "local": start a local Ray) and size the actors from the cluster's resources."""
        if address != "local" and Path(address).exists():
            raise UsageError(
                f"--ray {address}: that is a file or folder, not a Ray address",
                hint="put --ray after the inputs, or write --ray=ADDRESS (--ray alone starts a local Ray)",
            )
        if workers is not None and not 1 <= workers <= 4096:
            raise UsageError("--workers must be 1..4096")
        if gpus is not None and not 0 <= gpus <= 64:
            raise UsageError("--gpus-per-worker must be 0..64")
        cluster = cls(connect(address, quiet=quiet), 1, 0.0, 1)
        try:
            cluster.workers, cluster.gpus, cluster.threads = cluster_defaults(threads, gpus, workers)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    @staticmethod
    def driver_dtype(dtype: str) -> str:
        """The driver only plans, on its CPU (the workers' dtype: see `job_for`)."""
        return "float32" if str(dtype).lower() in ("float16", "fp16", "auto") else dtype

    def job(
        self, seg: Segmenter, model: str, params: Params, opts: Options, dtype: str, backend: str, registry: str | None
    ) -> Job:
        g, t = self.gpus, self.threads
        return job_for(seg, model, params, opts, gpus=g, threads=t, dtype=dtype, registry=registry, backend=backend)

    @staticmethod
    def backend_record(job: Job) -> dict[str, Any]:
        """summary.json's `backend` of a Ray run: what every worker ran."""
        why = "named for the workers" if job.backend != "torch" else "auto means torch with --ray (or asked for)"
        return {"requested": None, "backend": job.backend, "reason": why, "seconds": None}

    def stop(self) -> None:
        if self.started:
            ray_module().shutdown()
            self.started = False


__all__ = ["Cluster", "Job", "cluster_defaults", "connect", "job_for", "run", "segment"]
