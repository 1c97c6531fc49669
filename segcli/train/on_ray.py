"""`segcli train --ray`: the same training on a Ray cluster, through Ray Train's `TorchTrainer` (the [ray]
extra).

Ray Train starts the workers and their process group (gloo on CPUs, NCCL on GPUs) and sets the RANK /
WORLD_SIZE / LOCAL_RANK that `train.distributed` reads; each worker then runs `fit` as a torchrun rank does:
the same data code, rank 0 writing RUN/. The driver refuses a folder holding another run before any worker
starts and prints the run's progress from RUN/log.jsonl as it grows; its Ctrl-C / SIGTERM reaches the workers
as RUN/.stop-requested, and they stop after the same step with a checkpoint. A worker that dies (killed, a lost
node) fails the attempt; Ray Train's `FailureConfig` starts the workers again (`--max-failures`, 2), and
they resume from RUN's latest checkpoint. RUN must be on a filesystem every worker sees (one machine, or a
shared mount); Ray's own run folder (`storage_path`) is RUN/ray.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Any

from ..errors import SegcliError, UsageError, first_line
from ..extras import require
from .options import Events, Summary
from .run import RunFolder

STOP = ".stop-requested"  # in RUN/: the driver's Ctrl-C, seen by every worker after its step


def _loop(config: dict[str, Any]) -> None:
    """One Ray Train worker: `fit` as a rank of the run (after a failure: from the latest checkpoint),
    stopping after the step at which the driver asked (the ranks agree on the step)."""
    from .fit import fit

    stop = Path(config["out"]) / STOP
    events = Events(should_stop=stop.exists)
    fit(config["data"], config["model"], config["out"], events=events, resume=True, **config["options"])


def fit_on_ray(
    data: str | Path,
    model: str,
    out: str | Path,
    *,
    address: str | None,
    ray_workers: int,
    gpus_per_worker: float = 0.0,
    max_failures: int = 2,
    events: Events | None = None,
    **options: Any,
) -> Summary:
    """`fit` on `ray_workers` Ray Train workers, one rank each (`address`: as `segcli predict --ray` takes
    it; `options["workers"]` stays each rank's loader processes)."""
    from ..batch.ray_connect import connect

    ev = events or Events()
    if not 1 <= ray_workers <= 4096:
        raise UsageError(f"--ray-workers {ray_workers}: give 1..4096")
    if not 0 <= max_failures <= 100:
        raise UsageError(f"--max-failures {max_failures}: give 0..100")
    folder = RunFolder(Path(out))
    folder.check(bool(options.get("resume")))  # the workers resume whatever they find: refuse another run now
    require("ray.train", "ray", "segcli train --ray runs on Ray Train")
    from ray.exceptions import RayError
    from ray.train import FailureConfig, RunConfig, ScalingConfig, TrainingFailedError
    from ray.train.torch import TorchTrainer

    stop = folder.root / STOP
    stop.unlink(missing_ok=True)  # an earlier run's request
    started = connect(address, quiet=True)
    watch = _Tail(folder, ev)
    try:
        per_worker = {"CPU": 1.0, **({"GPU": gpus_per_worker} if gpus_per_worker else {})}
        options = {**options, "device": "cuda" if gpus_per_worker else options.get("device", "cpu")}
        options.pop("resume", None)
        config = {
            "data": str(Path(data).resolve()),
            "model": model,
            "out": str(folder.root.resolve()),
            "options": options,
        }
        trainer = TorchTrainer(
            _loop,
            train_loop_config=config,
            scaling_config=ScalingConfig(
                num_workers=ray_workers, use_gpu=gpus_per_worker > 0, resources_per_worker=per_worker
            ),
            run_config=RunConfig(
                name="segcli-train",
                storage_path=str((folder.root / "ray").resolve()),
                failure_config=FailureConfig(max_failures=max_failures),
            ),
        )
        ev.say(f"training on Ray Train: {ray_workers} workers ({per_worker}), up to {max_failures} restarts")
        watch.start()
        result = trainer.fit()
    except (TrainingFailedError, RayError) as e:
        raise SegcliError(
            f"Ray Train: the run failed ({first_line(e)})",
            hint=f"the latest checkpoint in {folder.checkpoints} is kept: rerun with --resume",
        ) from None
    finally:
        watch.stop()
        if started:
            import ray

            ray.shutdown()
    if result.error is not None:
        raise SegcliError(f"Ray Train: the run failed ({first_line(result.error)})")
    stopped = stop.exists()
    stop.unlink(missing_ok=True)
    latest = folder.latest()
    step = int(latest.name.removeprefix("iter_")) if latest else 0
    best = [r["best"] for r in folder.records() if "best" in r]
    return Summary(step, best[-1] if best else None, folder.model, stopped=stopped)


class _Tail:
    """The driver's progress: RUN/log.jsonl's new records handed to `Events.logged` as rank 0 writes them."""

    def __init__(self, folder: RunFolder, ev: Events, every: float = 1.0) -> None:
        self.folder, self.ev, self.every = folder, ev, every
        self._done = threading.Event()
        self._seen, self._resumes = (len(part) for part in folder.entries())
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)
        self._emit()

    def _run(self) -> None:
        while not self._done.wait(self.every):
            self._emit()
            stop = self.folder.root / STOP
            if self.ev.should_stop() and not stop.exists():  # Ctrl-C / SIGTERM here: the workers stop too
                stop.touch()
                self.ev.say("stopping after the current iteration (the workers save a checkpoint) ...")

    def _emit(self) -> None:
        try:
            records, resumes = self.folder.entries()  # one read of the log per poll
        except (OSError, json.JSONDecodeError):
            return
        for r in resumes[self._resumes :]:  # a restart after a failure (or --resume)
            self.ev.say(f"resumed at iteration {r['resumed_at']} from {r.get('checkpoint')}")
        self._resumes = len(resumes)
        if len(records) < self._seen:  # a restart resumed earlier: its lines after the checkpoint are dropped
            self._seen = len(records)
        for r in records[self._seen :]:
            try:
                self.ev.logged(r)
            except Exception as e:  # noqa: BLE001 - a printing callback must not stop the watch
                print(f"segcli: progress: {first_line(e)}", file=sys.stderr)
        self._seen = len(records)


__all__ = ["fit_on_ray"]
