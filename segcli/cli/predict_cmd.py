"""`segcli predict`: segment files, folders, globs or stdin lists into PNGs (+ JSON, overlays, probabilities)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from ..errors import EXIT_FAILED, EXIT_INTERRUPTED, SegcliError, UsageError
from ..io.images import DEFAULT_MAX_PIXELS
from .cluster import GpusOpt, RayCluster, RayOpt, WorkersOpt
from .common import (
    STATE,
    BackendOpt,
    CropOpt,
    DebugOpt,
    DeviceOpt,
    DtypeOpt,
    FlipOpt,
    ModelOpt,
    ModeOpt,
    PresetOpt,
    QuietOpt,
    RegistryOpt,
    ResizeOpt,
    ScalesOpt,
    StrideOpt,
    TileBatchOpt,
    choose_backend,
    earlier_backend,
    eprint,
    handle_errors,
    inference_overrides,
)
from .predict_opts import (
    AlphaOpt,
    BatchSizeOpt,
    ExtOpt,
    InputsArg,
    JsonlOpt,
    LegendOpt,
    MaxPixelsOpt,
    NullOpt,
    OutOpt,
    OverwriteOpt,
    RecursiveOpt,
    ReportOpt,
    SaveOpt,
    ShardOpt,
    ThreadsOpt,
    TopkOpt,
)
from .progress import Progress
from .raster_opts import BandsOpt, OverviewsOpt, ScaleRangeOpt, StretchOpt, raster_options
from .signals import SIGPIPE_CODE, GracefulStop

if TYPE_CHECKING:
    from ..batch import ImageRecord, Options, RunSummary
    from ..io.inputs import Discovery

DEFAULT_MODEL = "upernet-convnext-tiny"


def _save_kinds(text: str) -> frozenset[str]:
    from ..io.outputs import SAVE_KINDS

    kinds = {k.strip() for k in text.split(",") if k.strip() and k.strip() != "none"}
    unknown = sorted(kinds - set(SAVE_KINDS))
    if unknown:
        raise UsageError(
            f"unknown --save kind(s) {', '.join(unknown)}", hint=f"choose from {', '.join(SAVE_KINDS)}, or none"
        )
    return frozenset(kinds)


class _Reporter:
    """Each record as it comes: an error line for failures, a JSON line with --jsonl, progress; with
    --report, what the gallery shows of each image."""

    def __init__(
        self, progress: Progress, jsonl: bool, stop: GracefulStop, gallery: bool = False, out: Any = None
    ) -> None:
        self.progress, self.jsonl, self.stop = progress, jsonl, stop
        self.gallery: list[Any] | None = [] if gallery else None
        self.out = out  # where --jsonl records go (default: sys.stdout)

    def __call__(self, record: ImageRecord) -> None:
        if self.gallery is not None and record.status != "failed":
            from ..report.gallery import Entry

            entry = Entry(Path(record.input), record.name or record.input, record.status, record.outputs, record.counts)
            self.gallery.append(entry)
        if record.status == "failed":
            self.progress.print_error(f"segcli: error: {record.error}")
        if self.jsonl and self.stop.exit_code != SIGPIPE_CODE:
            try:
                print(json.dumps(record.to_json(), ensure_ascii=False), flush=True, file=self.out or sys.stdout)
            except BrokenPipeError:
                self.stop.stdout_closed()
        self.progress.advance(record.status)


def _model_kinds(kinds: frozenset[str], maps: tuple[str, ...], default: bool) -> frozenset[str]:
    """--save for this model: a parsing model's maps by default; an overlay per map."""
    missing = sorted(kinds & {"part", "material"} - set(maps))
    if missing:
        raise UsageError(
            f"--save {','.join(missing)}: this model has no {' or '.join(missing)} head",
            hint="part and material maps come from a unified perceptual parser (-m upp-resnet50-upernet)",
        )
    kinds = kinds | set(maps) if default else kinds
    overlays = {f"{m}_overlay" for m in maps} if "overlay" in kinds else set()
    return frozenset(kinds | overlays)


def _check_options(alpha: float, topk: int | None, batch_size: int, out: str, kinds: frozenset[str]) -> Path:
    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"--alpha {alpha} is outside 0..1")
    if topk is not None and not 1 <= topk <= 65536:
        raise UsageError("--topk must be at least 1")
    if topk is not None and "probs" not in kinds:
        raise UsageError("--topk applies to the probabilities", hint="add probs to --save, e.g. --save json,probs")
    if not 1 <= batch_size <= 1024:
        raise UsageError("--batch-size must be 1..1024")
    if not out.strip():
        raise UsageError("--out is empty", hint="name the output folder, e.g. -o masks")
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {path} exists and is not a directory")
    return path


def _load(
    model: str, cluster: RayCluster | None, threads: int | None, device: str, dtype: str, overrides: dict[str, Any]
) -> Any:
    """The Segmenter that runs here; with --ray the driver only plans (the model on its CPU), the actors run it."""
    from ..api import Segmenter

    if cluster is None:
        if threads is not None:
            import torch

            torch.set_num_threads(max(1, threads))
        return Segmenter.from_pretrained(model, device=device, dtype=dtype, registry=STATE.registry)
    if cluster.gpus and overrides.get("tile_batch") is None:
        overrides["tile_batch"] = 4  # as Segmenter.params does on an accelerator
    return Segmenter.from_pretrained(model, dtype=cluster.driver_dtype(dtype), registry=STATE.registry)


def _check_report(shard: tuple[int, int] | None) -> None:
    from ..report.html import require_report

    if shard:
        raise UsageError(
            "--report describes a whole run, not one --shard",
            hint="after the shards, run the same command without --shard and with --report (done images are skipped)",
        )
    require_report()


def _discovery_notes(found: Discovery, quiet: bool) -> None:
    """Warnings about what discovery skipped; a usage error when it found nothing at all."""
    for note in dict.fromkeys(found.skipped):
        eprint(f"segcli: warning: {note}")
    if (found.own_outputs or found.own_folders) and not quiet:
        folders = f" and {len(found.own_folders)} output folder(s) of earlier runs" if found.own_folders else ""
        eprint(f"segcli: note: left out {found.own_outputs} PNG(s) segcli wrote{folders} (e.g. earlier masks)")
    if not found.items and not found.errors:
        raise UsageError(
            "no images found in the inputs", hint="see --ext; folders are searched for jpg jpeg png bmp tif tiff webp"
        )


def _check_out(out: Path, found: Discovery) -> None:
    """--out must not be an input folder or contain one (its outputs would land among the inputs and be read
    back by the next run; a folder *inside* an input folder is fine: it is not searched) and must be
    writable — found out before any model is loaded."""
    from ..fsutil import overlap, probe_writable

    for root in sorted(found.roots):
        how = overlap(out, root)
        if how in ("is", "contains"):
            where = "is the input folder" if how == "is" else "contains the input folder"
            raise UsageError(
                f"--out {out} {where} {root}: outputs would be mixed with the images",
                hint="choose another folder, e.g. -o masks (a folder inside an input folder is fine)",
            )
    try:
        probe_writable(out)
    except OSError as e:
        raise UsageError(f"--out {out}: cannot write there ({e.strerror or e})") from None


def _finish(
    summary: RunSummary,
    doc: dict[str, Any],
    opts: Options,
    shard: tuple[int, int] | None,
    quiet: bool,
    stop: GracefulStop,
    fatal: SegcliError | None = None,
    info: Any = None,
    gallery: list[Any] | None = None,
) -> None:
    """Write summary.json (and the report, with --report), say how it went, exit with the code that tells it
    (`fatal`: the error that stopped the run, raised once the summary of what was done is written)."""
    from ..batch import write_run_files
    from ..fsutil import atomic_write_bytes
    from ..io.outputs import json_bytes

    name = "summary.json" if shard is None else f"summary-shard-{shard[0]}-of-{shard[1]}.json"
    failed = bool(summary.failures)
    try:
        atomic_write_bytes(opts.out / name, json_bytes(doc))
    except OSError as e:
        eprint(f"segcli: error: {opts.out / name}: cannot write the run summary ({e.strerror or e})")
        failed = True
    try:
        if info is not None:
            write_run_files(opts.out, info)
    except OSError as e:
        eprint(f"segcli: error: {opts.out}: cannot write legend.png / classes.json ({e.strerror or e})")
        failed = True
    if gallery is not None:
        from ..report import gallery as report

        try:
            page = report.write(opts.out, gallery, doc, info.class_set, opts.alpha)
            if not quiet:
                eprint(f"segcli: report: {page}")
        except OSError as e:
            eprint(f"segcli: error: {opts.out}: cannot write the report ({e.strerror or e})")
            failed = True
    if not quiet:
        s = summary
        rate = f", {s.done / s.seconds:.2f} images/s" if s.seconds > 0 and s.done else ""
        eprint(f"segcli: {s.done} done, {s.skipped} skipped, {len(s.failures)} failed of {s.total} → {opts.out}{rate}")
    if fatal is not None:
        raise fatal
    if summary.interrupted:
        raise typer.Exit(stop.exit_code or EXIT_INTERRUPTED)
    if failed:
        raise typer.Exit(EXIT_FAILED)


@handle_errors
def predict(
    inputs: InputsArg,
    out: OutOpt,
    model: ModelOpt = DEFAULT_MODEL,
    null: NullOpt = False,
    ext: ExtOpt = None,
    recursive: RecursiveOpt = True,
    shard: ShardOpt = None,
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    save: SaveOpt = None,
    alpha: AlphaOpt = 0.5,
    topk: TopkOpt = None,
    legend: LegendOpt = True,
    report: ReportOpt = False,
    jsonl: JsonlOpt = False,
    overwrite: OverwriteOpt = False,
    preset: PresetOpt = None,
    resize: ResizeOpt = None,
    mode: ModeOpt = None,
    crop: CropOpt = None,
    stride: StrideOpt = None,
    scales: ScalesOpt = None,
    flip: FlipOpt = None,
    tile_batch: TileBatchOpt = None,
    batch_size: BatchSizeOpt = 1,
    threads: ThreadsOpt = None,
    ray: RayOpt = None,
    workers: WorkersOpt = None,
    gpus_per_worker: GpusOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    backend: BackendOpt = "auto",
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
    registry: RegistryOpt = None,
    bands: BandsOpt = None,
    scale_range: ScaleRangeOpt = None,
    stretch: StretchOpt = None,
    overviews: OverviewsOpt = False,
) -> None:
    """Segment images: for each input, <out>/<path relative to its input root>/<stem>.png (palette PNG,
    pixel value = class index) plus what --save asks for: <stem>.json (summary; default), <stem>_label.png
    (grayscale indices), <stem>_overlay.jpg, <stem>_probs.npy (float16) or <stem>_topK.npz; a unified
    perceptual parser also writes <stem>_part.png and <stem>_material.png (and their overlays), and its
    JSON names the scene (top 5), the materials and the parts.

    Images already done with the same model and parameters are skipped (resume by re-running the same
    command); summary.json sums up the run. Unreadable images get one error line on stderr each and the
    batch goes on; the exit code is then 1."""
    from .. import batch
    from ..backends import check as check_backend
    from ..engine.presets import check
    from ..io.inputs import discover, in_shard, parse_extensions, parse_shard

    overrides = inference_overrides(resize, mode, crop, stride, scales, flip, tile_batch)
    check(preset, **overrides)  # typos are usage errors before any download or model loading
    check_backend(backend)
    kinds = _save_kinds(save or "json")
    shard_spec = parse_shard(shard)
    out_dir = _check_options(alpha, topk, batch_size, out, kinds)
    raster = raster_options(bands, scale_range, stretch, overviews, kinds)
    if report:
        _check_report(shard_spec)
    found = discover(inputs, extensions=parse_extensions(ext), recursive=recursive, null=null, exclude=out_dir)
    _discovery_notes(found, quiet)
    items = [it for it in found.items if in_shard(it, shard_spec)]  # an empty shard is a normal, empty run
    _check_out(out_dir, found)
    cluster = RayCluster.start(ray, workers, gpus_per_worker, threads) if ray is not None else None
    try:
        seg = _load(model, cluster, threads, device, dtype, overrides)
        params = seg.params(preset, **overrides)
        kinds = _model_kinds(kinds, seg.maps, save is None)
        opts = batch.Options(
            out_dir,
            kinds,
            alpha,
            topk,
            overwrite,
            batch_size,
            max_pixels,
            legend=legend,
            report=report,
            raster=raster,
            overviews=overviews,
        )
        earlier = earlier_backend(out_dir, overwrite)  # auto keeps it: a resumed run keeps its fingerprint
        choice = None if cluster else choose_backend(seg, backend, params, len(items), quiet, earlier)
        job = cluster.job(seg, model, params, opts, dtype, backend) if cluster is not None else None
        progress = Progress(len(items) + len(found.errors), enabled=not quiet)
        summary = batch.RunSummary(tuple(seg.classes), seg.scenes, total=len(found.errors))
        fatal: SegcliError | None = None
        with GracefulStop() as stop:  # until the summary is written
            with progress:
                out = cluster.stdout if cluster is not None else None
                reporter = _Reporter(progress, jsonl, stop, gallery=report, out=out)
                for arg, reason in found.errors:
                    record = batch.ImageRecord.failed(arg, None, f"{arg}: {reason}")
                    summary.add(record)
                    reporter(record)
                run = dict(report=reporter, should_stop=lambda: stop.stop, summary=summary)
                try:
                    if cluster is not None and job is not None:
                        cluster.run(seg, job, items, **run)
                    else:
                        batch.run(seg, items, params, opts, on_windows=progress.windows, **run)
                except SegcliError as e:  # stops the run; what was done is still summed up
                    fatal, summary.interrupted = e, True
            extra = {"inputs": inputs, "shard": list(shard_spec) if shard_spec else None, "out": str(out_dir)}
            extra["backend"] = choice.to_json() if choice is not None else cluster.backend_record(job)
            inference = job.inference if job is not None else seg.inference(params)
            doc = summary.to_json(batch.model_record(seg.info), params.preset, inference, sorted(opts.save), extra)
            _finish(summary, doc, opts, shard_spec, quiet, stop, fatal, seg.info, reporter.gallery)
    finally:
        if cluster is not None:
            cluster.stop()
