"""`segcli train`: fine-tune a model on a folder of images and masks (the library's `segcli.train.fit`)."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import UsageError
from .common import DebugOpt, QuietOpt, eprint, handle_errors
from .signals import GracefulStop

DATA = "Data"
RUN = "Training"
CLUSTER = "Several GPUs or machines"


def _crop(text: str) -> tuple[int, int]:
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2):
        raise UsageError(f"--crop {text!r}: give H or HxW in pixels, e.g. --crop 512 or --crop 512x1024")
    return (parts[0], parts[-1])


def _weights(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"--class-weights {text!r}: give numbers separated by commas, e.g. 1,1,4") from None


def _progress(quiet: bool, jsonl: bool) -> Any:
    """What each log record prints: a JSON line on stdout (--jsonl), a progress line on stderr."""
    from ..train.options import progress_line

    last_val: list[str] = [""]

    def logged(record: dict[str, Any]) -> None:
        if jsonl:
            print(json.dumps(record), flush=True)
        if quiet:
            return
        if "val_mIoU" in record:
            last_val[0] = f", last val mIoU {100 * record['val_mIoU']:.2f}"
        eprint(f"segcli: {progress_line(record, '' if 'val_mIoU' in record else last_val[0])}")

    return logged


@handle_errors
def train(
    data: Annotated[Path, typer.Argument(metavar="DATA", help="images/ + masks/ (or labels/, annotations/), mmseg's img_dir/ + ann_dir/, a .txt list of 'image mask' pairs, or (a unified parser) a .jsonl manifest of images and their task labels.")],
    model: Annotated[str, typer.Option("--model", "-m", metavar="MODEL", help="The model to start from: a registry name, a directory, a Hub repo, a converted checkpoint.")],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="RUN", help="The run's folder: checkpoints/, log.jsonl, model/ (for predict -m RUN/model).")],
    classes: Annotated[Path | None, typer.Option(metavar="FILE", help="Classes to train for: classes.json, mmseg meta JSON, one name per line, or CSV name,r,g,b [the model's].", rich_help_panel=DATA)] = None,
    val: Annotated[Path | None, typer.Option(metavar="DIR", help="Validation data (the same layout).", rich_help_panel=DATA)] = None,
    val_split: Annotated[float | None, typer.Option(metavar="F", help="Hold out this fraction of the pairs for validation (seeded).", rich_help_panel=DATA)] = None,
    reduce_zero_label: Annotated[bool, typer.Option("--reduce-zero-label", help="Mask value 0 = unlabelled, k → class k-1 (ADE style).", rich_help_panel=DATA)] = False,
    ignore_index: Annotated[int, typer.Option(metavar="V", help="Mask value of unlabelled pixels.", rich_help_panel=DATA)] = 255,
    class_weights: Annotated[str | None, typer.Option(metavar="W,W,...", help="Cross-entropy weight of each class, in the classes' order.", rich_help_panel=DATA)] = None,
    tasks: Annotated[str | None, typer.Option(metavar="T,T,...", help="A unified parser's tasks to train (object, part, material, scene); the other heads keep their weights [all].", rich_help_panel=DATA)] = None,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Train without the pairs the scan finds problems in (else the run refuses).", rich_help_panel=DATA)] = False,
    iters: Annotated[int | None, typer.Option(metavar="N", help="Training iterations [2000].", rich_help_panel=RUN)] = None,
    epochs: Annotated[int | None, typer.Option(metavar="N", help="Or: passes over the training pairs.", rich_help_panel=RUN)] = None,
    batch: Annotated[int, typer.Option(metavar="B", help="Images per iteration (per rank under torchrun).", rich_help_panel=RUN)] = 2,
    accumulate: Annotated[int, typer.Option(metavar="K", help="Micro-batches of B per iteration, gradients accumulated.", rich_help_panel=RUN)] = 1,
    sync_bn: Annotated[bool, typer.Option("--sync-bn", help="Under torchrun: BatchNorm statistics over all ranks' batches.", rich_help_panel=RUN)] = False,
    crop: Annotated[str, typer.Option(metavar="H[xW]", help="Training crop.", rich_help_panel=RUN)] = "512",
    lr: Annotated[float | None, typer.Option(metavar="X", help="Base learning rate [the recipe's].", rich_help_panel=RUN)] = None,
    recipe: Annotated[str | None, typer.Option(metavar="NAME", help="resnet | convnext | swin | upp [the model's family].", rich_help_panel=RUN)] = None,
    val_every: Annotated[int | None, typer.Option(metavar="N", help="Validate every N iterations [5 times a run].", rich_help_panel=RUN)] = None,
    log_every: Annotated[int, typer.Option(metavar="N", help="Log (stderr, log.jsonl, --jsonl) every N iterations.", rich_help_panel=RUN)] = 10,
    amp: Annotated[str, typer.Option(metavar="auto|bf16|fp16|off", help="Mixed precision: auto = bf16 where computed natively.", rich_help_panel=RUN)] = "auto",
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in RUN from its last checkpoint.", rich_help_panel=RUN)] = False,
    device: Annotated[str, typer.Option(metavar="D", help="cpu, cuda, cuda:1, ...", rich_help_panel=RUN)] = "cpu",
    workers: Annotated[int, typer.Option(metavar="N", help="Processes decoding and augmenting images.", rich_help_panel=RUN)] = 2,
    seed: Annotated[int, typer.Option(metavar="S", help="Seed of the data order, crops and new classifier rows.", rich_help_panel=RUN)] = 0,
    report: Annotated[bool | None, typer.Option("--report/--no-report", help="RUN/report.html: curves, per-class IoU, samples [when the report extra is installed].", rich_help_panel=RUN)] = None,
    ray: Annotated[str | None, typer.Option("--ray", metavar="[ADDRESS]", help="Train on Ray Train's TorchTrainer: ADDRESS as Ray takes it (auto: the running cluster or $RAY_ADDRESS); alone, a local Ray of the run's own. RUN must be on storage every worker sees. Put it after DATA, or write --ray=ADDRESS. The [ray] extra.", rich_help_panel=CLUSTER)] = None,
    ray_workers: Annotated[int, typer.Option(metavar="N", help="--ray: training workers (Ray Train's TorchTrainer), one rank each.", rich_help_panel=CLUSTER)] = 2,
    gpus_per_worker: Annotated[float, typer.Option(metavar="G", help="--ray: GPUs per training worker.", rich_help_panel=CLUSTER)] = 0.0,
    max_failures: Annotated[int, typer.Option(metavar="N", help="--ray: worker failures survived (each restart resumes from the latest checkpoint).", rich_help_panel=CLUSTER)] = 2,
    jsonl: Annotated[bool, typer.Option("--jsonl", help="Every log line as JSON on stdout.")] = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:  # fmt: skip
    """Fine-tune a model on your own labelled images; RUN/model is then what predict, evaluate and export take.

    A pre-flight scan reads every pair first and lists each problem; the run refuses them (or skips them
    with --skip-bad). Checkpoints are written atomically; Ctrl-C saves one and exits 130; --resume continues
    exactly where the run stopped (the same loss curve). Under torchrun (or srun) every rank runs this
    command: DistributedDataParallel, --batch per rank, rank 0 writes RUN."""
    from ..train.fit import Events, fit

    say = (lambda m: None) if quiet else (lambda m: eprint(f"segcli: {m}"))
    run: Any = fit
    if ray is not None:
        from ..train.on_ray import fit_on_ray

        run = functools.partial(
            fit_on_ray, address=ray, ray_workers=ray_workers, gpus_per_worker=gpus_per_worker, max_failures=max_failures
        )
    with GracefulStop() as stop:
        events = Events(say=say, logged=_progress(quiet, jsonl), should_stop=lambda: stop.stop)
        summary = run(
            data, model, out, events=events, classes=classes, val=val, val_split=val_split,
            reduce_zero_label=reduce_zero_label, ignore_index=ignore_index, skip_bad=skip_bad, class_weights=_weights(class_weights), iters=iters, epochs=epochs,
            batch=batch, crop=_crop(crop), lr=lr, recipe=recipe, val_every=val_every, log_every=log_every, amp=amp, resume=resume,
            device=device, workers=workers, seed=seed, report=report, accumulate=accumulate, sync_bn=sync_bn,
            tasks=tuple(t.strip() for t in tasks.split(",") if t.strip()) if tasks is not None else None,
        )  # fmt: skip
    if summary.stopped:
        if summary.rank == 0:
            eprint(f"segcli: stopped at iteration {summary.iters}; the checkpoint is saved: add --resume to continue")
        raise typer.Exit(stop.exit_code or 130)
    if summary.rank != 0:  # rank 0 speaks for the run
        return
    best = f", best val mIoU {100 * summary.best_miou:.2f}" if summary.best_miou is not None else ""
    if not quiet:
        eprint(f"segcli: trained {summary.iters} iterations{best}: {summary.model}")
    print(summary.model, file=sys.stdout if not jsonl else sys.stderr)
