"""`segcli.batch.predict`: a prediction over a collection, end to end (what `segcli predict` runs).

    check the request (nothing loaded) → discover the inputs → connect to Ray (--ray) → load the model →
    resolve the parameters and the outputs → pick the backend → run here (`runner.run`) or on the Ray actors
    (`ray.run`) → summary.json, legend.png / classes.json, the HTML report

Every record goes to `Events.record` as it comes; run-level problems (a summary that cannot be written) are
`RunSummary.run_errors`; an error that stops the run (a broken model) is raised once what was done is summed up.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import SegcliError
from .plan import Options
from .records import ImageRecord, RunRecord, RunSummary
from .request import (
    Events,
    Request,
    check_inputs_apart,
    check_options,
    check_out,
    check_report,
    discovery_notes,
    earlier_backend,
    model_kinds,
    publish_url,
    raster_options,
    remote_options,
    save_kinds,
)

if TYPE_CHECKING:
    from ..api import Segmenter
    from ..backends import Choice
    from ..engine.presets import Params
    from ..io.inputs import Discovery, Item
    from .ray import Cluster, Job


def predict(
    inputs: Sequence[str] | str, model: str, out: str | Path, *, events: Events | None = None, **options: Any
) -> RunSummary:
    """Segment the images `inputs` name (files, folders, globs, "-": paths on stdin) with `model` into `out`;
    `options` are `Request`'s fields (save="json,overlay", inference=Inference(preset="mmseg-ms"), ray="local",
    ...). Resumes: images finished earlier with the same fingerprint are skipped."""
    names = (inputs,) if isinstance(inputs, str) else tuple(inputs)
    return run_request(Request(names, out, model, **options), events or Events())


def run_request(req: Request, events: Events) -> RunSummary:
    """`predict` of a `Request`."""
    from ..io.inputs import in_shard, parse_shard
    from ..io.remote import redact

    began = time.perf_counter()
    req.inference.check()
    kinds = save_kinds(req.save) | ({"coco"} if req.coco_file else set())
    shard = parse_shard(req.shard)
    out = check_options(req, kinds)
    raster = raster_options(req, kinds)
    if req.report:
        check_report(shard)
    found = req.found if req.found is not None else _discover(req, out)
    videos = _videos(req, found, kinds, events)
    discovery_notes(found, events.say)
    items = [it for it in found.items if in_shard(it, shard)]  # an empty shard is a normal, empty run
    check_out(out, found)
    publish = publish_url(req)
    if publish is not None:
        check_inputs_apart(publish, found)
    cluster = _connect(req) if req.ray is not None else None
    try:
        seg = _load(req, cluster)
        loaded = time.perf_counter()
        params = seg.params(req.inference.preset, **_overrides(req, cluster))
        kinds = model_kinds(kinds, seg.maps, req.save is None)
        opts = Options(
            out,
            kinds,
            req.alpha,
            req.topk,
            req.overwrite,
            req.batch_size,
            req.max_pixels,
            legend=req.legend,
            report=req.report,
            raster=raster,
            overviews=req.overviews,
            low_confidence=req.low_confidence,
            labelstudio=(req.ls_from_name, req.ls_to_name, req.ls_image_prefix),
            vector=(req.vector_format, str(req.min_area), float(req.simplify)),
            remote=remote_options(req),
            publish=publish,
        )
        run = _Run(req, seg, params, opts, cluster, events, began, loaded)
        summary = run.start(found, len(items))
        run.execute(items, summary)
        if videos and "video" in kinds and not summary.interrupted:
            run.video_files(summary, found.items)
        summary.extra = {
            "inputs": [redact(a) for a in req.inputs],
            "shard": list(shard) if shard else None,
            "out": redact(publish) if publish else str(out),
        }
        tail = "" if shard is None else f"-shard-{shard[0]}-of-{shard[1]}"
        if req.coco_file:
            run.coco_files(summary, [it.key for it in found.items], tail)
        if "labelstudio" in kinds:
            run.labelstudio_files(summary, [it.key for it in items], tail)
        run.finish(summary, f"summary{tail}.json")
    finally:
        if cluster is not None:
            cluster.stop()
    if run.fatal is not None:
        raise run.fatal
    return summary


def _discover(req: Request, out: Path) -> Discovery:
    from ..io.inputs import discover, parse_extensions

    exts = parse_extensions(req.ext)
    remote = remote_options(req)
    return discover(
        list(req.inputs), extensions=exts, recursive=req.recursive, null=req.null, exclude=out, remote=remote
    )


def _videos(req: Request, found: Discovery, kinds: frozenset[str], events: Events) -> int:
    """Each video of `found` replaced by its chosen frames (`batch.video`); how many there were."""
    from ..io.video import Selection, is_video_path
    from .video import expand

    selection = Selection.parse(req.every, req.fps, req.start, req.end)
    given = sum(is_video_path(it.path) and it.remote is None for it in found.items)
    videos = expand(found, selection, req.max_pixels)
    if videos:
        events.say("info", f"{videos} video(s): {sum(it.frame is not None for it in found.items)} frames to segment")
    for flag, used in (("--every/--fps/--start/--end", not selection.default), ("--save video", "video" in kinds)):
        if used and not given:
            events.say("warning", f"{flag}: no video among the inputs, so it changes nothing")
    return videos


def _connect(req: Request) -> Cluster:
    from .ray import Cluster

    assert req.ray is not None
    return Cluster.start(req.ray, req.workers, req.gpus_per_worker, req.threads, quiet=not req.ray_logs)


def _overrides(req: Request, cluster: Cluster | None) -> dict[str, Any]:
    overrides = req.inference.overrides()
    if cluster is not None and cluster.gpus and overrides["tile_batch"] is None:
        overrides["tile_batch"] = 4  # as Segmenter.params does on an accelerator
    return overrides


def _load(req: Request, cluster: Cluster | None) -> Segmenter:
    """The Segmenter that runs here; with --ray the driver only plans (the model on its CPU), the actors run it."""
    from ..api import Segmenter

    inf = req.inference
    if cluster is not None:
        seg = Segmenter.from_pretrained(req.model, dtype=cluster.driver_dtype(inf.dtype), registry=req.registry)
    else:
        if req.threads is not None:
            import torch

            torch.set_num_threads(max(1, req.threads))
        seg = Segmenter.from_pretrained(req.model, device=inf.device, dtype=inf.dtype, registry=req.registry)
    if inf.class_map is not None:
        seg.map_classes(inf.class_map)
    return seg


def choose_backend(
    seg: Segmenter,
    backend: str,
    params: Params,
    images: int,
    earlier: str | None,
    events: Events,
    measure: str = "auto",
) -> Choice:
    """Pick the backend and say which: `auto` keeps the `earlier` run's backend where it still applies (resume),
    else calibrates when nothing is cached and measuring costs at most a tenth of the run's `images`
    (`backends.budget`); `measure` ("again" / "never", `--backend-measure`) measures now or never."""

    def log(message: str) -> None:
        events.say("info", message)

    choice = None
    if str(backend).lower() == "auto" and earlier is not None and measure != "again":
        with contextlib.suppress(SegcliError):  # it no longer applies (another preset, onnxruntime gone)
            choice = seg.use_backend(earlier, params, log=log)
            choice = replace(choice, requested="auto", reason="the backend of the earlier run into this folder")
            seg.backend_choice = choice
    if choice is None:
        calibrate = measure != "never"
        run = None if measure == "again" else images
        choice = seg.use_backend(
            backend, params, calibrate=calibrate, remeasure=measure == "again", log=log, run_images=run
        )
    if choice.requested != "torch":
        log(f"backend {choice.backend} ({choice.reason})")
    return choice


@dataclass
class _Run:
    """One run, once the model is loaded: its backend and record, the records as they come, the files after."""

    req: Request
    seg: Segmenter
    params: Params
    opts: Options
    cluster: Cluster | None
    events: Events
    began: float  # time.perf_counter() when the run was asked for
    loaded: float  # … and when its model was loaded
    job: Job | None = None
    gallery: list[Any] | None = None
    fatal: SegcliError | None = None  # the error that stopped the run, raised once it is summed up
    touched: set[str] = field(default_factory=set)  # videos with a frame done in this run
    failed: set[str] = field(default_factory=set)  # names of video frames that failed in this run

    def start(self, found: Discovery, planned: int) -> RunSummary:
        """Choose the backend (or the Ray workers' job), then the summary with discovery's failures in it."""
        backend, t = self.req.inference.backend, time.perf_counter()
        if self.cluster is not None:
            c = self.cluster
            self.job = c.job(
                self.seg, self.req.model, self.params, self.opts, self.req.inference.dtype, backend, self.req.registry
            )
            record, choice = self.job.record, c.backend_record(self.job)
        else:
            earlier = earlier_backend(self.opts.out, self.opts.overwrite)
            measure = self.req.inference.backend_measure
            choice = choose_backend(self.seg, backend, self.params, planned, earlier, self.events, measure).to_json()
            record = RunRecord.of(self.seg, self.params)  # after the choice: the backend is part of the runtime
        self.gallery = [] if self.req.report else None
        summary = RunSummary(tuple(self.seg.classes), self.seg.scenes, run=record, backend=choice)
        summary.setup_seconds = {"load_model": self.loaded - self.began, "choose_backend": time.perf_counter() - t}
        summary.total = len(found.errors)
        self.events.started(planned + len(found.errors))
        for arg, reason in found.errors:
            failed = ImageRecord.failed(arg, None, f"{arg}: {reason}")
            summary.add(failed)
            self.report(failed)
        return summary

    def report(self, image: ImageRecord) -> None:
        if image.frame is not None:  # a video's frame: not in the report's gallery (no image file to show)
            if image.status == "done":
                self.touched.add(image.input)
            elif image.status == "failed":
                self.failed.add(image.name or "")
        elif self.gallery is not None and image.status != "failed":
            from ..io.remote import scheme
            from ..report.gallery import Entry

            name, url = image.name or image.input, image.input if scheme(image.input) else None
            entry = Entry(Path(image.input), name, image.status, image.outputs, image.counts, uncertain=image.uncertain,
                          url=url)  # fmt: skip
            self.gallery.append(entry)
        self.events.record(image)

    def execute(self, items: list[Item], summary: RunSummary) -> None:
        from . import runner

        report, stop = self.report, self.events.should_stop
        try:
            if self.cluster is not None and self.job is not None:
                from .ray import run as on_ray

                c = self.cluster
                on_ray(
                    self.seg,
                    self.job,
                    items,
                    workers=c.workers,
                    gpus=c.gpus,
                    report=report,
                    should_stop=stop,
                    summary=summary,
                )
            else:
                on_windows = self.events.windows
                runner.run(
                    self.seg,
                    items,
                    self.params,
                    self.opts,
                    report=report,
                    should_stop=stop,
                    summary=summary,
                    on_windows=on_windows,
                )
        except SegcliError as e:  # stops the run; what was done is still summed up
            self.fatal, summary.interrupted = e, True

    def finish(self, summary: RunSummary, name: str) -> None:
        """summary.json (`name`), legend.png / classes.json and (with --report) the report; what cannot be
        written is a run error, said at once."""
        from ..fsutil import atomic_write_bytes
        from ..io.outputs import json_bytes
        from .runner import write_run_files

        summary.wall_seconds = time.perf_counter() - self.began
        out, doc = self.opts.out, summary.to_json(self.opts.save)
        self._write(
            summary, f"{out / name}: cannot write the run summary", atomic_write_bytes, out / name, json_bytes(doc)
        )
        self._write(summary, f"{out}: cannot write legend.png / classes.json", write_run_files, out, self.seg.info)
        if self.opts.publish:  # the run-level files after the images', summary.json last (batch.outbox)
            from .outbox import Outbox

            box = Outbox(self.opts.publish.rstrip("/"), out, self.opts.remote)
            self._write(summary, "the run files were not all uploaded", box.upload, box.run_files(name))
        if self.gallery is not None:
            from ..report import gallery

            c, links = self.seg.info.class_set, self.req.report_inputs or "absolute"
            if links == "copy":
                self.events.say("info", f"report: copying {len(self.gallery)} inputs into {out / gallery.FOLDER}")
            what = f"{out}: cannot write the report"
            page = self._write(summary, what, gallery.write, out, self.gallery, doc, c, self.opts.alpha, links)
            if page is not None:
                self.events.say("info", f"report: {page}")

    def video_files(self, summary: RunSummary, items: list[Item]) -> None:
        """Each video's overlay video and class-area CSV (`--save video`; batch.video)."""
        from .plan import fingerprint
        from .video import VideoOutputs, write_video_files
        from .writer import background

        assert summary.run is not None
        c, o = self.seg.info.class_set, self.opts
        run = VideoOutputs(o.out, c, o.alpha, background(c), fingerprint(summary.run, o), o.max_pixels)
        inputs = {it.path.resolve() for it in items if it.remote is None}
        for line in write_video_files(items, run, self.touched, self.failed, inputs, self.events.say):
            summary.run_errors.append(line)
            self.events.say("error", line)

    def coco_files(self, summary: RunSummary, inputs: list[str], tail: str) -> None:
        """OUT/coco{tail}.json and coco-results{tail}.json from the images' COCO files (io.coco)."""
        from ..io import coco

        files = summary.collected.get("coco", {})
        docs = [(n, files[s]) for n, s in enumerate(inputs, 1) if s in files]  # ids: places
        out = self.opts.out  # among all the inputs, whatever the shard
        paths = (out / f"coco{tail}.json", out / f"coco-results{tail}.json")
        what = f"{paths[0]}: cannot write the run's COCO files"
        problems = self._write(summary, what, coco.write_run_files, docs, tuple(self.seg.classes), *paths) or []
        for line in problems:
            summary.run_errors.append(line)
            self.events.say("error", line)

    def labelstudio_files(self, summary: RunSummary, inputs: list[str], tail: str) -> None:
        """OUT/labelstudio{tail}.json (the tasks to import, in input order) and labelstudio{tail}.xml (their
        labeling config), from the images' task files (io.labelstudio)."""
        from ..fsutil import atomic_write_bytes
        from ..io import labelstudio

        files = summary.collected.get("labelstudio", {})
        out, (from_name, to_name, _) = self.opts.out, self.opts.labelstudio
        tasks, config = out / f"labelstudio{tail}.json", out / f"labelstudio{tail}.xml"
        what = f"{tasks}: cannot write the Label Studio tasks"
        found = [files[s] for s in inputs if s in files]
        problems = self._write(summary, what, labelstudio.write_tasks, found, tasks) or []
        for line in problems:
            summary.run_errors.append(line)
            self.events.say("error", line)
        c = self.seg.info.class_set
        xml = labelstudio.labeling_config(c.classes, c.palette_array, from_name=from_name, to_name=to_name)
        self._write(summary, f"{config}: cannot write the labeling config", atomic_write_bytes, config, xml.encode())

    def _write(self, summary: RunSummary, what: str, step: Callable[..., Any], *args: Any) -> Any:
        try:
            return step(*args)
        except OSError as e:
            summary.run_errors.append(f"{what} ({e.strerror or e})")
            self.events.say("error", summary.run_errors[-1])
            return None
