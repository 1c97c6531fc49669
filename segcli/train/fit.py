"""`segcli train` as a library call: `fit(data, model, out, **options)` fine-tunes any model segcli loads
on a folder of images and masks and writes `out/model/`, which `segcli predict -m out/model` runs.

Sample g of the run (iteration g // batch) is a pure function of (seed, g): the epoch's permutation of the
training pairs and the augmentation's random draws are seeded by it, so a resumed run reads the same
crops as an uninterrupted one, whatever the number of loader processes.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..errors import SegcliError, UsageError, first_line
from . import distributed, parsing_data
from .data import MaskRule, Pair, Scan, Split, find, scan
from .options import DEFAULT_ITERS, Events, Options, Summary
from .run import RunFolder
from .session import Session


def fit(data: str | Path, model: str, out: str | Path, *, events: Events | None = None, **options: Any) -> Summary:
    """Fine-tune `model` on `data` into `out` (see the module docstring); `options` are `Options`' fields."""
    opts = Options(**options)
    ev = events or Events()
    _check(opts)
    world = distributed.from_env()  # torchrun / srun: one of several ranks
    if not world.main:  # rank 0 speaks for the run
        ev = Events(should_stop=ev.should_stop)
    opts.device = str(distributed.join(world, opts.device))
    try:
        folder = RunFolder(Path(out))
        folder.check(opts.resume)
        if parsing_data.is_manifest(Path(data)):
            split: Split | None = None
        else:
            split = find(Path(data), opts.val, opts.val_split, opts.seed)  # the data's problems before the model
        session = Session.start(model, opts, ev, world)
        rule = MaskRule(session.num_classes, opts.ignore_index, opts.reduce_zero_label, session.classes.palette)
        if session.parsing:
            train, val = _parsing_data(Path(data), session, opts, ev)
        elif split is None:
            raise UsageError(f"{data}: a manifest of several tasks' labels trains a unified perceptual parser",
                             hint=f"-m {model} trains on images + masks (see segcli train --help)")  # fmt: skip
        else:
            train, val = _scan(split, rule, opts, ev)
        if opts.epochs is not None:  # every pair seen `epochs` times by the global batch
            opts.iters = max(1, math.ceil(opts.epochs * len(train) / (opts.batch * opts.accumulate * world.size)))
        elif opts.iters is None:
            opts.iters = DEFAULT_ITERS
        summary = session.run(folder, train, val, rule)
        return replace(summary, rank=world.rank)
    except RuntimeError as e:  # DistError (and gloo's transport errors, which some versions raise plain)
        if not world.distributed or not (isinstance(e, torch.distributed.DistError) or _transport(e)):
            raise
        latest = RunFolder(Path(out)).latest()
        raise SegcliError(
            f"{world}: the run lost another rank ({_said(e)})",
            hint=f"the latest checkpoint ({latest.name if latest else 'none yet'}) is kept: "
            "start the same command again with --resume",
        ) from None
    finally:
        distributed.leave(world)


def _transport(e: BaseException) -> bool:
    return any(word in str(e) for word in ("gloo", "NCCL", "Connection reset", "Connection closed"))


def _said(e: BaseException) -> str:
    """What a collective's failure says, without gloo's source location and advice: "Read error
    [10.0.0.2]:29500: Connection reset by peer"."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", first_line(e, 400))
    return text.split(". ")[0]


def _check(opts: Options) -> None:
    if opts.iters is not None and opts.epochs is not None:
        raise UsageError("--iters and --epochs both given", hint="choose one")
    if opts.iters is not None and not 1 <= opts.iters <= 10_000_000:
        raise UsageError(f"--iters {opts.iters}: give 1..10000000")
    if opts.epochs is not None and not 1 <= opts.epochs <= 100_000:
        raise UsageError(f"--epochs {opts.epochs}: give 1..100000")
    if not 1 <= opts.batch <= 1024:
        raise UsageError(f"--batch {opts.batch}: give 1..1024")
    if not 1 <= opts.accumulate <= 1024:
        raise UsageError(f"--accumulate {opts.accumulate}: give 1..1024")
    if min(opts.crop) < 16 or max(opts.crop) > 8192:
        raise UsageError(f"--crop {opts.crop[0]}x{opts.crop[1]}: give sides of 16..8192 pixels, e.g. --crop 512")
    if not 1 <= opts.log_every <= 1_000_000:
        raise UsageError(f"--log-every {opts.log_every}: give 1 or more")
    if opts.val_every is not None and opts.val_every < 1:
        raise UsageError(f"--val-every {opts.val_every}: give 1 or more")
    if not 0 <= opts.workers <= 64:
        raise UsageError(f"--workers {opts.workers}: give 0..64")
    if opts.amp not in ("auto", "bf16", "fp16", "off"):
        raise UsageError(f"--amp {opts.amp!r}: give auto, bf16, fp16 or off")


def _scan(split: Split, rule: MaskRule, opts: Options, ev: Events) -> tuple[list[Pair], list[Pair]]:
    """The pre-flight scan of every pair: problems one line each; refused, or skipped with --skip-bad."""
    ev.say(f"data: {len(split.train)} training and {len(split.val)} validation pairs ({split.layout})")
    t, v = scan(split.train, rule), scan(split.val, rule)
    _refuse(split.missing + t.problems + v.problems, opts, ev)
    if not t.good:
        raise UsageError("no usable training pairs left after the scan")
    ev.say(_frequencies(t))
    return t.good, v.good


def _parsing_data(data: Path, session: Session, opts: Options, ev: Events) -> tuple[list[Any], list[Any]]:
    """A parser's records, scanned as `_scan` scans pairs; those without a trained task left out."""
    heads = session.net.config.heads
    scenes = tuple(session.info.head_sets["scene"].classes) if "scene" in session.info.head_sets else ()
    split = parsing_data.find(data, scenes, opts.val, opts.val_split, opts.seed)
    ev.say(f"data: {len(split.train)} training and {len(split.val)} validation images ({split.layout})")
    train, t_problems = parsing_data.scan(split.train, heads)
    val, v_problems = parsing_data.scan(split.val, heads)
    _refuse(split.problems + t_problems + v_problems, opts, ev)
    train = [r for r in train if session.tasks & set(r.tasks)]
    if not train:
        raise UsageError(f"no training image has labels for --tasks {','.join(sorted(session.tasks))}")
    sources = sorted({r.source for r in train})
    counts = ", ".join(f"{s} {sum(r.source == s for r in train)}" for s in sources)
    ev.say(f"sources: {counts} (one per batch, drawn in proportion); tasks {', '.join(sorted(session.tasks))}")
    return train, val


def _refuse(problems: list[str], opts: Options, ev: Events) -> None:
    """Each problem one line; the run refused, or told it goes on without them (--skip-bad)."""
    for line in problems:
        ev.say(f"data problem: {line}")
    if problems and not opts.skip_bad:
        raise UsageError(
            f"the scan found {len(problems)} problem(s) in the data (listed above)",
            hint="fix them, or add --skip-bad to train without those pairs",
        )
    if problems:
        ev.say(f"skipping {len(problems)} pair(s) with problems (--skip-bad)")


def _frequencies(s: Scan) -> str:
    total = max(int(s.pixels.sum()), 1)
    counts = s.pixels.tolist()
    shares = ", ".join(f"{i}: {100 * c / total:.1f}%" for i, c in enumerate(counts) if c)
    absent = sum(1 for c in counts if not c)
    missing = f"; {absent} of {len(counts)} classes absent" if absent else ""
    return f"class pixels: {shares} (unlabelled {s.ignored:,}{missing})"


__all__ = ["Events", "Options", "Summary", "fit"]
