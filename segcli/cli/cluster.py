"""`segcli predict --ray`: the connection to a Ray cluster and the actors' shape (the [ray] extra)."""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import UsageError
from .common import STATE

RUN = "Execution"

RayOpt = Annotated[
    str | None,
    typer.Option(
        "--ray",
        metavar="[ADDRESS]",
        help="Run on Ray Data: ADDRESS as Ray takes it (auto: a running cluster or $RAY_ADDRESS); alone, a local "
        "Ray is started and stopped. Put it after the inputs, or write --ray=ADDRESS. The [ray] extra.",
        rich_help_panel=RUN,
    ),
]

WorkersOpt = Annotated[
    int | None,
    typer.Option(
        metavar="N", help="--ray: actors (default: one per GPU, else per CPU / --threads).", rich_help_panel=RUN
    ),
]

GpusOpt = Annotated[
    float | None,
    typer.Option(
        metavar="G", help="--ray: GPUs per actor (default: 1 when the cluster has GPUs, else 0).", rich_help_panel=RUN
    ),
]


@dataclass
class RayCluster:
    """--ray: the connection and the actors' shape (workers × GPUs × threads)."""

    started: bool
    workers: int
    gpus: float
    threads: int
    stdout: Any = None  # the real standard output, kept for --jsonl (Ray prints its notes to fd 1)

    def keep_stdout_for_records(self) -> None:
        """Route everything else written to fd 1 (Ray's "(raylet) ..." notes) to stderr: stdout stays JSON."""
        try:
            fd = sys.stdout.fileno()
        except (AttributeError, OSError, ValueError):  # not a real file (a test runner's buffer): leave it
            return
        sys.stdout.flush()
        self.stdout = os.fdopen(os.dup(fd), "w", buffering=1, encoding="utf-8")
        os.dup2(sys.stderr.fileno(), fd)

    @classmethod
    def start(cls, address: str, workers: int | None, gpus: float | None, threads: int | None) -> RayCluster:
        from ..batch import ray as seg_ray

        if address != "local" and Path(address).exists():
            raise UsageError(
                f"--ray {address}: that is a file or folder, not a Ray address",
                hint="put --ray after the inputs, or write --ray=ADDRESS (--ray alone starts a local Ray)",
            )
        if workers is not None and not 1 <= workers <= 4096:
            raise UsageError("--workers must be 1..4096")
        if gpus is not None and not 0 <= gpus <= 64:
            raise UsageError("--gpus-per-worker must be 0..64")
        cluster = cls(False, 1, 0.0, 1)
        cluster.keep_stdout_for_records()
        try:
            cluster.started = seg_ray.connect(address, quiet=not STATE.debug)
            cluster.workers, cluster.gpus, cluster.threads = seg_ray.cluster_defaults(threads, gpus, workers)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    @staticmethod
    def driver_dtype(dtype: str) -> str:
        # the driver only plans, on its CPU (the workers' dtype: see ray.job_for)
        return "float32" if str(dtype).lower() in ("float16", "fp16", "auto") else dtype

    def job(self, seg: Any, model: str, params: Any, opts: Any, dtype: str, backend: str) -> Any:
        from ..batch import ray as seg_ray

        g, t, r = self.gpus, self.threads, STATE.registry
        return seg_ray.job_for(seg, model, params, opts, gpus=g, threads=t, dtype=dtype, registry=r, backend=backend)

    @staticmethod
    def backend_record(job: Any) -> dict[str, Any]:
        """summary.json's `backend` of a Ray run: what every worker ran."""
        why = "named for the workers" if job.backend != "torch" else "auto means torch with --ray (or asked for)"
        return {"requested": None, "backend": job.backend, "reason": why, "seconds": None}

    def run(self, seg: Any, job: Any, items: list[Any], **kw: Any) -> None:
        from ..batch import ray as seg_ray

        seg_ray.run(seg, job, items, workers=self.workers, gpus=self.gpus, **kw)

    def stop(self) -> None:
        if self.started:
            import ray

            ray.shutdown()
        if self.stdout is not None:
            with contextlib.suppress(OSError):  # a closed pipe (| head): nothing more to say there
                self.stdout.flush()
            os.dup2(self.stdout.fileno(), sys.stdout.fileno())
            with contextlib.suppress(OSError):
                self.stdout.close()
