"""`segcli predict`: segment files, folders, globs or stdin lists into PNGs (+ JSON, overlays, probabilities)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from ..batch.request import DEFAULT_MODEL, Inference
from ..errors import EXIT_FAILED, EXIT_INTERRUPTED
from ..io.images import DEFAULT_MAX_PIXELS
from .cluster import GpusOpt, RayOpt, WorkersOpt, records_stdout
from .common import STATE, DebugOpt, ModelOpt, QuietOpt, RegistryOpt, eprint, handle_errors, with_inference
from .predict_opts import (
    AlphaOpt,
    BatchSizeOpt,
    CocoFileOpt,
    ExtOpt,
    InputsArg,
    JsonlOpt,
    LegendOpt,
    LowConfidenceOpt,
    LsFromOpt,
    LsPrefixOpt,
    LsToOpt,
    MaxPixelsOpt,
    MinAreaOpt,
    NullOpt,
    OutOpt,
    OverwriteOpt,
    RecursiveOpt,
    ReportInputsOpt,
    ReportOpt,
    SaveOpt,
    ShardOpt,
    SimplifyOpt,
    ThreadsOpt,
    TopkOpt,
    VectorFormatOpt,
)
from .raster_opts import BandsOpt, OverviewsOpt, ScaleRangeOpt, StretchOpt, TrustVrtOpt
from .remote_opts import RetriesOpt, TimeoutOpt
from .reporter import Reporter
from .signals import GracefulStop
from .video_opts import EndOpt, EveryOpt, FpsOpt, StartOpt

if TYPE_CHECKING:
    from ..batch import RunSummary


NO_OVERRIDES = Inference()  # the model's preset as it is (`with_inference` passes the options given)


def _outcome(summary: RunSummary, quiet: bool, stop: GracefulStop) -> None:
    """Say how it went, and exit with the code that tells it."""
    if not quiet:
        s, out = summary, summary.extra.get("out")
        rate = f", {s.done / s.seconds:.2f} images/s" if s.seconds > 0 and s.done else ""
        eprint(f"segcli: {s.done} done, {s.skipped} skipped, {len(s.failures)} failed of {s.total} → {out}{rate}")
    if summary.interrupted:
        raise typer.Exit(stop.exit_code or EXIT_INTERRUPTED)
    if summary.failures or summary.run_errors:
        raise typer.Exit(EXIT_FAILED)


@handle_errors
@with_inference
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
    coco_file: CocoFileOpt = False,
    vector_format: VectorFormatOpt = "geojson",
    min_area: MinAreaOpt = "0",
    simplify: SimplifyOpt = 0.0,
    ls_from_name: LsFromOpt = "tag",
    ls_to_name: LsToOpt = "image",
    ls_image_prefix: LsPrefixOpt = "",
    low_confidence: LowConfidenceOpt = 0.5,
    legend: LegendOpt = True,
    report: ReportOpt = False,
    report_inputs: ReportInputsOpt = None,
    jsonl: JsonlOpt = False,
    overwrite: OverwriteOpt = False,
    batch_size: BatchSizeOpt = 1,
    threads: ThreadsOpt = None,
    ray: RayOpt = None,
    workers: WorkersOpt = None,
    gpus_per_worker: GpusOpt = None,
    inference: Inference = NO_OVERRIDES,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
    registry: RegistryOpt = None,
    bands: BandsOpt = None,
    scale_range: ScaleRangeOpt = None,
    stretch: StretchOpt = None,
    overviews: OverviewsOpt = False,
    trust_vrt: TrustVrtOpt = False,
    every: EveryOpt = None,
    fps: FpsOpt = None,
    start: StartOpt = None,
    end: EndOpt = None,
    timeout: TimeoutOpt = 30.0,
    retries: RetriesOpt = 2,
) -> None:
    """Segment images: for each input, <out>/<path relative to its input root>/<stem>.png (palette PNG,
    pixel value = class index) plus what --save asks for: <stem>.json (summary; default), <stem>_label.png
    (grayscale indices), <stem>_overlay.jpg, <stem>_probs.npy (float16) or <stem>_topK.npz; a unified
    perceptual parser also writes <stem>_part.png and <stem>_material.png (and their overlays), and its
    JSON names the scene (top 5), the materials and the parts. A video (clip.mp4) gets that per frame
    under clip/ (000123.png, …); --save video adds clip_overlay.mp4 and clip_areas.csv.

    Images already done with the same model and parameters are skipped (resume by re-running the same
    command); summary.json sums up the run. Unreadable images get one error line on stderr each and the
    batch goes on; the exit code is then 1."""
    from .. import batch

    options: dict[str, Any] = dict(
        inference=inference,
        save=save,
        alpha=alpha,
        topk=topk,
        coco_file=coco_file,
        vector_format=vector_format,
        min_area=min_area,
        simplify=simplify,
        ls_from_name=ls_from_name,
        ls_to_name=ls_to_name,
        ls_image_prefix=ls_image_prefix,
        low_confidence=low_confidence,
        legend=legend,
        report=report,
        report_inputs=report_inputs,
        overwrite=overwrite,
        batch_size=batch_size,
        max_pixels=max_pixels,
        threads=threads,
        ext=ext,
        recursive=recursive,
        null=null,
        shard=shard,
        bands=bands,
        scale_range=scale_range,
        stretch=stretch,
        trust_vrt=trust_vrt,
        overviews=overviews,
        every=every,
        fps=fps,
        start=start,
        end=end,
        timeout=timeout,
        retries=retries,
        ray=ray,
        workers=workers,
        gpus_per_worker=gpus_per_worker,
        registry=STATE.registry,
        ray_logs=STATE.debug,
    )
    with records_stdout(ray is not None) as stdout:
        reporter = Reporter(quiet, jsonl, stdout)
        with reporter.scope:
            summary = batch.predict(inputs, model, out, events=reporter, **options)
            _outcome(summary, quiet, reporter.stop)
