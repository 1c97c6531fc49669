"""`segcli train` as a library call: `fit(data, model, out, **options)` fine-tunes any model segcli loads
on a folder of images and masks and writes `out/model/`, which `segcli predict -m out/model` runs.

Sample g of the run (iteration g // batch) is a pure function of (seed, g): the epoch's permutation of the
training pairs and the augmentation's random draws are seeded by it, so a resumed run reads the same
crops as an uninterrupted one, whatever the number of loader processes.
"""

from __future__ import annotations

import math
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import SegcliError, UsageError
from ..io.images import load_image
from ..model import Segmentor
from .augment import Pipeline
from .data import MaskRule, Pair, Scan, Split, find, read_mask, scan
from .loss import IGNORE_INDEX, losses
from .recipes import Recipe, optimizer, recipe_for, set_lr
from .run import RunFolder

DEFAULT_ITERS = 2000


@dataclass
class Options:
    iters: int | None = None  # None: --epochs, else DEFAULT_ITERS
    epochs: int | None = None
    batch: int = 2
    crop: tuple[int, int] = (512, 512)
    lr: float | None = None
    recipe: str | None = None
    classes: Path | None = None
    val: Path | None = None
    val_split: float | None = None
    val_every: int | None = None  # iterations; None: 5 validations per run
    log_every: int = 10
    checkpoint_every: int | None = None  # None: at every validation
    reduce_zero_label: bool = False
    ignore_index: int = IGNORE_INDEX
    skip_bad: bool = False
    resume: bool = False
    seed: int = 0
    workers: int = 2  # loader processes (0: in this process)
    device: str = "cpu"
    amp: str = "auto"
    photometric: bool = True
    dropout: float | None = None  # before the classifiers, in training; None: the model's source's (loss.dropout_for)


@dataclass
class Events:
    """What a run tells its caller (the CLI prints, a script may ignore)."""

    say: Callable[[str], None] = lambda message: None
    logged: Callable[[dict[str, Any]], None] = lambda record: None
    should_stop: Callable[[], bool] = lambda: False


@dataclass
class Summary:
    iters: int
    best_miou: float | None
    model: Path
    stopped: bool = False
    log: list[dict[str, Any]] = field(default_factory=list)


class Samples(torch.utils.data.Dataset):
    """Sample g (0 ≤ g < total) of the run: the pair the epoch's seeded permutation puts there, augmented
    with the generator seeded by (seed, g)."""

    def __init__(self, pairs: list[Pair], rule: MaskRule, pipe: Pipeline, seed: int, first: int, total: int):
        self.pairs, self.rule, self.pipe, self.seed, self.first, self.total = pairs, rule, pipe, seed, first, total

    def __len__(self) -> int:
        return self.total - self.first

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.first + i
        n = len(self.pairs)
        order = np.random.default_rng([self.seed, g // n]).permutation(n)
        pair = self.pairs[int(order[g % n])]
        image, labels = load_image(pair.image), read_mask(pair.mask, self.rule)
        image, labels = self.pipe(image, labels, np.random.default_rng([self.seed, 1 << 20, g]))
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1), torch.from_numpy(labels)


def fit(data: str | Path, model: str, out: str | Path, *, events: Events | None = None, **options: Any) -> Summary:
    """Fine-tune `model` on `data` into `out` (see the module docstring); `options` are `Options`' fields."""
    from .session import Session

    opts = Options(**options)
    ev = events or Events()
    _check(opts)
    folder = RunFolder(Path(out))
    folder.check(opts.resume)
    split = find(Path(data), opts.val, opts.val_split, opts.seed)
    session = Session.start(model, opts, ev)
    rule = MaskRule(session.num_classes, opts.ignore_index, opts.reduce_zero_label, session.classes.palette)
    train, val = _scan(split, rule, opts, ev)
    if opts.epochs is not None:  # every pair seen `epochs` times
        opts.iters = max(1, math.ceil(opts.epochs * len(train) / opts.batch))
    elif opts.iters is None:
        opts.iters = DEFAULT_ITERS
    return session.run(folder, train, val, rule)


def _check(opts: Options) -> None:
    if opts.iters is not None and opts.epochs is not None:
        raise UsageError("--iters and --epochs both given", hint="choose one")
    if opts.iters is not None and not 1 <= opts.iters <= 10_000_000:
        raise UsageError(f"--iters {opts.iters}: give 1..10000000")
    if opts.epochs is not None and not 1 <= opts.epochs <= 100_000:
        raise UsageError(f"--epochs {opts.epochs}: give 1..100000")
    if not 1 <= opts.batch <= 1024:
        raise UsageError(f"--batch {opts.batch}: give 1..1024")
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
    problems = split.missing + t.problems + v.problems
    for line in problems:
        ev.say(f"data problem: {line}")
    if problems and not opts.skip_bad:
        raise UsageError(
            f"the scan found {len(problems)} problem(s) in the data (listed above)",
            hint="fix them, or add --skip-bad to train without those pairs",
        )
    if problems:
        ev.say(f"skipping {len(problems)} pair(s) with problems (--skip-bad)")
    if not t.good:
        raise UsageError("no usable training pairs left after the scan")
    ev.say(_frequencies(t))
    return t.good, v.good


def _frequencies(s: Scan) -> str:
    total = max(int(s.pixels.sum()), 1)
    shares = ", ".join(f"{i}: {100 * c / total:.1f}%" for i, c in enumerate(s.pixels.tolist()))
    return f"class pixels: {shares} (unlabelled {s.ignored:,})"


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """`--amp auto`: bf16 where it is computed natively (CUDA ≥ 8.0, AVX512-BF16 / AMX CPUs), fp16 on older
    CUDA (with a gradient scaler), else none (float32)."""
    from ..backends.hardware import native_bf16

    if amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.get_device_capability(device)[0] >= 8 else torch.float16
    return torch.bfloat16 if native_bf16(device) else None


def max_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def step_once(
    net: Segmentor,
    opt: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    amp: torch.dtype | None,
    scaler: torch.amp.GradScaler | None,
    mean_over: str = "all",
) -> dict[str, float]:
    """One optimisation step on a batch (uint8 images [B, 3, H, W], labels [B, H, W]): the loss terms."""
    device = next(net.parameters()).device
    x = net.normalize(images.to(device, torch.float32))
    with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
        terms = losses(net, x, labels.to(device), mean_over=mean_over)
    if not math.isfinite(terms["total"].item()):
        raise SegcliError(
            f"the loss is {terms['total'].item()} (diverged)",
            hint="lower --lr, or try --amp off",
        )
    opt.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(terms["total"]).backward()
        scaler.step(opt)
        scaler.update()
    else:
        terms["total"].backward()
        opt.step()
    return {k: float(v.detach()) for k, v in terms.items()}


def timing(n: int, started: float) -> float:
    return n / max(time.perf_counter() - started, 1e-9)


__all__ = ["Events", "Options", "Recipe", "Samples", "Summary", "fit", "optimizer", "recipe_for", "replace", "set_lr"]
