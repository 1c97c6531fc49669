"""`segcli predict`: segment files, folders, globs or stdin lists into PNGs (+ JSON, overlays, probabilities)."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import EXIT_FAILED, EXIT_INTERRUPTED, UsageError
from ..images import DEFAULT_MAX_PIXELS
from .common import STATE, DeviceOpt, DtypeOpt, ModelOpt, PresetOpt, QuietOpt, eprint, handle_errors
from .progress import Progress

DEFAULT_MODEL = "upernet-convnext-tiny"
IN, OUT, INF, RUN = "Inputs", "Outputs", "Inference (overrides the preset)", "Execution"


def _save_kinds(text: str) -> frozenset[str]:
    from ..outputs import SAVE_KINDS

    kinds = {k.strip() for k in text.split(",") if k.strip() and k.strip() != "none"}
    unknown = sorted(kinds - set(SAVE_KINDS))
    if unknown:
        raise UsageError(f"unknown --save kind(s) {', '.join(unknown)}", hint=f"choose from {', '.join(SAVE_KINDS)}, or none")
    return frozenset(kinds)


class _StopOnSigint:
    """First Ctrl-C: finish the images in flight, write the summary, exit 130. Second: stop at once."""

    def __init__(self) -> None:
        self.stop = False
        self._previous: Any = None

    def __enter__(self) -> _StopOnSigint:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.stop:
            raise KeyboardInterrupt
        self.stop = True
        eprint("segcli: interrupted: finishing the images in flight (Ctrl-C again to stop at once)")

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


@handle_errors
def predict(
    inputs: Annotated[
        list[str],
        typer.Argument(
            metavar="INPUT",
            help="Image files, folders (searched recursively), glob patterns ('scans/*/*.tif'), or - to read "
            "paths from stdin, one per line.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (created if missing).", rich_help_panel=OUT)],
    model: ModelOpt = DEFAULT_MODEL,
    null: Annotated[
        bool, typer.Option("--null", "-0", help="Paths on stdin are NUL-separated (find -print0).", rich_help_panel=IN)
    ] = False,
    ext: Annotated[
        str | None, typer.Option(help="Extensions searched in folders [jpg,jpeg,png,bmp,tif,tiff,webp].", rich_help_panel=IN)
    ] = None,
    recursive: Annotated[bool, typer.Option("--recursive/--no-recursive", help="Search subfolders.", rich_help_panel=IN)] = True,
    shard: Annotated[
        str | None, typer.Option(help="Process shard I of N (I from 0), e.g. $SLURM_ARRAY_TASK_ID/8.", rich_help_panel=IN)
    ] = None,
    max_pixels: Annotated[
        int, typer.Option(help="Refuse larger images (default: Pillow's decompression-bomb limit).", rich_help_panel=IN)
    ] = DEFAULT_MAX_PIXELS,
    save: Annotated[
        str, typer.Option(help="Besides <stem>.png: any of label, overlay, probs, json (comma list), or none.", rich_help_panel=OUT)
    ] = "json",
    alpha: Annotated[float, typer.Option(help="Overlay opacity of the class colours (0..1).", rich_help_panel=OUT)] = 0.5,
    topk: Annotated[
        int | None, typer.Option(help="probs: keep the K most probable classes (.npz) instead of all (.npy).", rich_help_panel=OUT)
    ] = None,
    jsonl: Annotated[
        bool, typer.Option("--jsonl", help="One JSON record per image on stdout (and nothing else).", rich_help_panel=OUT)
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Redo images whose outputs already exist.", rich_help_panel=OUT)
    ] = False,
    preset: PresetOpt = None,
    resize: Annotated[str | None, typer.Option(help="none | SHORT[:LONG] (keep ratio) | HxW.", rich_help_panel=INF)] = None,
    mode: Annotated[str | None, typer.Option(help="whole | slide (sliding windows).", rich_help_panel=INF)] = None,
    crop: Annotated[str | None, typer.Option(help="Slide window size: N or HxW.", rich_help_panel=INF)] = None,
    stride: Annotated[str | None, typer.Option(help="Slide window stride: N or HxW.", rich_help_panel=INF)] = None,
    scales: Annotated[str | None, typer.Option(help="Ratios of the resize target, e.g. 0.5,1,1.5.", rich_help_panel=INF)] = None,
    flip: Annotated[bool | None, typer.Option("--flip/--no-flip", help="Add horizontally flipped views.", rich_help_panel=INF)] = None,
    tile_batch: Annotated[
        int | None, typer.Option(help="Windows per forward pass (default 1 on CPU, 4 on GPU).", rich_help_panel=INF)
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Same-size images run together.", rich_help_panel=RUN)] = 1,
    threads: Annotated[int | None, typer.Option(help="CPU threads for inference (default: torch's).", rich_help_panel=RUN)] = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    quiet: QuietOpt = False,
) -> None:
    """Segment images: for each input, <out>/<path relative to its input root>/<stem>.png (palette PNG,
    pixel value = class index) plus what --save asks for: <stem>.json (summary; default), <stem>_label.png
    (grayscale indices), <stem>_overlay.jpg, <stem>_probs.npy (float16) or <stem>_topK.npz.

    Images already done with the same model and parameters are skipped (resume by re-running the same
    command); summary.json sums up the run. Unreadable images get one error line on stderr each and the
    batch goes on; the exit code is then 1."""
    from .. import batch
    from ..api import Segmenter
    from ..inputs import discover, in_shard, parse_extensions, parse_shard
    from ..outputs import atomic_write_bytes, json_bytes
    from ..presets import check

    overrides = {"resize": resize, "mode": mode, "crop": crop, "stride": stride, "scales": scales, "flip": flip,
                 "tile_batch": tile_batch}  # fmt: skip
    check(preset, **overrides)  # typos are usage errors before any download or model loading
    kinds = _save_kinds(save)
    shard_spec = parse_shard(shard)
    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"--alpha {alpha} is outside 0..1")
    if topk is not None and topk < 1:
        raise UsageError("--topk must be at least 1")
    if batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    found = discover(inputs, extensions=parse_extensions(ext), recursive=recursive, null=null, exclude=out)
    items = [it for it in found.items if in_shard(it, shard_spec)]
    if not items and not found.errors:
        raise UsageError("no images found in the inputs", hint="see --ext; folders are searched for jpg jpeg png bmp tif tiff webp")
    if threads is not None:
        import torch

        torch.set_num_threads(max(1, threads))
    seg = Segmenter.from_pretrained(model, device=device, dtype=dtype, registry=STATE.registry)
    params = seg.params(preset, **overrides)
    opts = batch.Options(out, kinds, alpha, topk, overwrite, batch_size, max_pixels)

    progress = Progress(len(items) + len(found.errors), enabled=not quiet)

    def report(record: dict[str, Any]) -> None:
        if record["status"] == "failed":
            progress.print_error(f"segcli: error: {record['error']}")
        if jsonl:
            print(json.dumps(record, ensure_ascii=False), flush=True)
        progress.advance(record["status"])

    for arg, reason in found.errors:
        report({"schema": "segcli.prediction/1", "input": arg, "name": None, "status": "failed",
                "error": f"{arg}: {reason}"})  # fmt: skip
    with progress, _StopOnSigint() as sigint:
        result = batch.run(seg, items, params, opts, report=report, should_stop=lambda: sigint.stop)
    result.total += len(found.errors)
    result.failures[:0] = [{"input": a, "error": f"{a}: {r}"} for a, r in found.errors]
    name = "summary.json" if shard_spec is None else f"summary-shard-{shard_spec[0]}-of-{shard_spec[1]}.json"
    extra = {"inputs": inputs, "shard": list(shard_spec) if shard_spec else None, "out": str(out)}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / name, json_bytes(batch.summary(result, seg, params, opts, extra)))
    if not quiet:
        rate = f", {result.done / result.seconds:.2f} images/s" if result.seconds > 0 and result.done else ""
        eprint(f"segcli: {result.done} done, {result.skipped} skipped, {len(result.failures)} failed "
               f"of {result.total} → {out}{rate}")  # fmt: skip
    if result.interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)
    if result.failures:
        raise typer.Exit(EXIT_FAILED)
