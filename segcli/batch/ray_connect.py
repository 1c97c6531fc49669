"""Joining Ray for a batch run (the `[ray]` extra): connecting or starting a local Ray, in bounded time and
without Ray's native log lines on the terminal, and sizing the actors from the cluster's resources."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

from ..errors import Interrupted, UsageError
from ..extras import require

PURPOSE = "it runs segcli on a Ray cluster (--ray, segcli.ray)"


def ray_module() -> Any:
    return require("ray", "ray", PURPOSE)


CONNECT_TIMEOUT_S = 60.0  # joining a running cluster ($SEGCLI_RAY_CONNECT_TIMEOUT overrides)
_PROBE = (
    "import logging, sys, ray; ray.init(address=sys.argv[1], include_dashboard=False, log_to_driver=False, "
    "logging_level=logging.ERROR); ray.shutdown()"
)


def connect(address: str | None, quiet: bool = True) -> bool:
    """Connect to Ray (`address` "local" or None: start a local Ray of this run's own — never a cluster a
    stale session file names; "auto" or an address: join that cluster, within `CONNECT_TIMEOUT_S`). True when
    this call initialized Ray (a connection, and the local Ray it started), which `ray.shutdown()` ends;
    False when it already was."""
    ray = ray_module()
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if quiet:  # Ray's own log lines (its C++ core and Ray Data's progress notes) would bury segcli's
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.ERROR)
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": not quiet, "logging_level": logging.ERROR}
    if address and address != "local":
        probe(address)
    with native_log_lines_dropped(quiet):
        ray.init(address=address if address and address != "local" else "local", **kwargs)
    return True


_NATIVE_LINE = re.compile(rb"^\[\d{4}-\d\d-\d\d [\d:,]+ [A-Z] \d+ \d+\] [\w.]+\.cc:\d+: ")


@contextlib.contextmanager
def native_log_lines_dropped(active: bool = True) -> Iterator[None]:
    """Ray's C++ core log lines written to this process's stderr (file descriptor 2) inside the block left
    out; everything else written there is passed on when the block ends. Ray's core says
    "logging.cc: Set ray log level from environment variable …" as it starts, whatever that level is."""
    if not active:
        yield
        return
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read(1 << 20).splitlines(keepends=True) if not _NATIVE_LINE.match(line)]
            if kept:
                os.write(2, b"".join(kept))


def probe(address: str, timeout: float | None = None) -> None:
    """Join `address` once in a child process, bounded in time (Ray's own connect retries for minutes, in
    native code that a SIGTERM does not interrupt); UsageError when no cluster answers there."""
    import signal
    import sys

    if timeout is None:
        timeout = _timeout()
    env = {**os.environ, "RAY_BACKEND_LOG_LEVEL": "fatal"}
    child = subprocess.Popen(
        [sys.executable, "-c", _PROBE, address], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, env=env, start_new_session=True,
    )  # fmt: skip

    def stop(signum: int, frame: Any) -> None:
        raise Interrupted(128 + signum)

    main = threading.current_thread() is threading.main_thread()
    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP)} if main else {}
    try:
        _, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise UsageError(
            f"--ray {address}: no Ray cluster answered there within {timeout:.0f} s",
            hint="check the address (`ray status` on the head node; $SEGCLI_RAY_CONNECT_TIMEOUT waits longer), "
            "or give --ray alone to start a local Ray",
        ) from None
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for s, handler in old.items():
            signal.signal(s, handler)
    if child.returncode != 0:
        lines = [line for line in err.decode(errors="replace").splitlines() if line.strip()]
        why = next((line for line in reversed(lines) if "Error" in line), lines[-1] if lines else "")
        raise UsageError(
            f"--ray {address}: cannot join a Ray cluster there ({why.strip()[:300]})",
            hint="start one (`ray start --head`), check the address, or give --ray alone to start a local Ray",
        )


def _timeout() -> float:
    text = os.environ.get("SEGCLI_RAY_CONNECT_TIMEOUT", "")
    try:
        value = float(text) if text else CONNECT_TIMEOUT_S
    except ValueError:
        raise UsageError(f"SEGCLI_RAY_CONNECT_TIMEOUT={text!r}: give seconds, e.g. 120") from None
    if not 0 < value <= 86400:
        raise UsageError(f"SEGCLI_RAY_CONNECT_TIMEOUT={text!r}: give 1..86400 seconds")
    return value


def data_context() -> Any:
    ctx = ray_module().data.DataContext.get_current()
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # after ray.data set up its logging
    ctx.execution_options.preserve_order = True  # records in input order, like a local run
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    return ctx


def cluster_defaults(threads: int | None, gpus_per_worker: float | None, workers: int | None) -> tuple[int, float, int]:
    """(workers, GPUs per worker, threads per worker): the cluster's GPUs, one worker each; else its CPUs."""
    resources = ray_module().cluster_resources()
    gpus = int(resources.get("GPU", 0))
    cpus = max(1, int(resources.get("CPU", 1)))
    per_gpu = float(gpus_per_worker) if gpus_per_worker is not None else (1.0 if gpus else 0.0)
    if per_gpu and not gpus:  # no actor could ever be placed: the run would wait forever
        raise UsageError(
            f"--gpus-per-worker {gpus_per_worker:g}: the Ray cluster has no GPUs",
            hint="leave --gpus-per-worker out (or 0) on a CPU cluster",
        )
    threads = max(1, threads or (cpus // max(gpus, 1) if per_gpu else 1))
    if workers is None:
        workers = max(1, int(gpus / per_gpu)) if per_gpu else max(1, cpus // threads)
    return workers, per_gpu, threads
