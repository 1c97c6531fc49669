"""What a training run takes and tells: its options, the events it reports, its summary."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .loss import IGNORE_INDEX

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
    class_weights: tuple[float, ...] | None = None  # one per class: the cross-entropy's weights
    report: bool | None = None  # RUN/report.html; None: when the [report] extra is installed
    dropout: float | None = None  # before the classifiers, in training; None: the model's source's (loss.dropout_for)
    accumulate: int = 1  # micro-batches of `batch` per iteration (gradients accumulated)
    sync_bn: bool = False  # BatchNorm statistics over the global batch when several ranks train
    tasks: tuple[str, ...] | None = None  # a parser's tasks trained (the other heads frozen); None: all


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
    rank: int = 0  # this process's rank (0: the one that wrote the run)


def progress_line(record: dict[str, Any], last_val: str = "") -> str:
    """The stderr line of a log record (without "segcli: "): an iteration's loss, lr, speed and ETA, or a
    validation's mIoU."""
    it = record["iter"]
    if "val_mIoU" in record:
        tasks = "".join(
            f", {t} {100 * record[f'val_{t}_mIoU']:.2f}" for t in ("object", "material") if f"val_{t}_mIoU" in record
        )
        scene = f", scene accuracy {100 * record['val_scene_acc']:.1f}%" if "val_scene_acc" in record else ""
        return (
            f"iteration {it}: val mIoU {100 * record['val_mIoU']:.2f}{tasks}{scene} (best {100 * record['best']:.2f})"
        )
    m, sec = divmod(int(record["eta_s"]), 60)
    eta = f"{m // 60}:{m % 60:02d}:{sec:02d}"
    return (
        f"iteration {it}: loss {record['total']:.4f}, lr {record['lr']:.3g}, "
        f"{record['images_per_s']:.2f} img/s, ETA {eta}{last_val}"
    )
