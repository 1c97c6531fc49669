"""Decode ahead, run same-size images together, write behind — records come out in input order.

Decoding runs in a small thread pool, a bounded number of images ahead; consecutive images of one size form
a batch (up to `batch_size`) for one call of `infer`; writing runs in one thread. A task decided before the
run (skipped, refused) or an image that fails to decode keeps its place in the order of the records.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..engine import Prediction
from ..errors import EXIT_USAGE, SegcliError
from .plan import Task
from .records import ImageRecord

Decode = Callable[[Task], np.ndarray]
Infer = Callable[[list[np.ndarray]], list[Prediction]]
Write = Callable[[Task, np.ndarray, Prediction, dict[str, float]], ImageRecord]


def _finished(record: ImageRecord) -> Future:
    fut: Future = Future()
    fut.set_result(record)
    return fut


def _failure(task: Task, error: BaseException, what: str) -> ImageRecord:
    """One input's failure record: a segcli error as it is, anything else named with its type."""
    if isinstance(error, SegcliError):
        reason = str(error)
    else:
        detail = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        reason = f"{task.item.path}: {what} ({type(error).__name__}{': ' + detail if detail else ''})"
    return ImageRecord.failed(str(task.item.path), task.item.name.as_posix(), reason)


def _timed_decode(decode: Decode, task: Task) -> tuple[np.ndarray, float]:
    t = time.perf_counter()
    return decode(task), time.perf_counter() - t


@dataclass
class _Pending:
    task: Task
    future: Future  # decoding: → (image, seconds); else → the finished ImageRecord
    decoding: bool


class _Run:
    """The queues of one `Pipeline.run`."""

    def __init__(
        self, pipeline: Pipeline, tasks: Iterable[Task], decoders: ThreadPoolExecutor, writer: ThreadPoolExecutor
    ) -> None:
        self.p, self.tasks = pipeline, iter(tasks)
        self.decoders, self.writer = decoders, writer
        self.queue: deque[_Pending] = deque()  # decoding or decided, in input order
        self.writes: deque[Future] = deque()  # → ImageRecord, in input order
        self.decoding = 0

    def fill(self) -> None:
        while self.decoding < self.p.batch_size + self.p.decoders:
            task = next(self.tasks, None)
            if task is None:
                return
            if task.record is not None:
                self.queue.append(_Pending(task, _finished(task.record), False))
            else:
                self.queue.append(_Pending(task, self.decoders.submit(_timed_decode, self.p.decode, task), True))
                self.decoding += 1

    def _pop(self) -> _Pending:
        head = self.queue.popleft()
        self.decoding -= head.decoding
        self.fill()
        return head

    def next_batch(self) -> list[tuple[Task, np.ndarray, float]]:
        """Decoded images of one size from the head of the queue; decided records pass on to the writes."""
        batch: list[tuple[Task, np.ndarray, float]] = []
        while self.queue and len(batch) < self.p.batch_size:
            head = self.queue[0]
            if not head.decoding:  # a decided record keeps its place in the order
                if batch:
                    break
                self.writes.append(self._pop().future)
                continue
            try:
                image, seconds = head.future.result()
            except SegcliError as e:
                if batch:
                    break
                task = self._pop().task
                self.writes.append(
                    _finished(ImageRecord.failed(str(task.item.path), task.item.name.as_posix(), str(e)))
                )
                continue
            if batch and image.shape != batch[0][1].shape:
                break  # a different size starts the next batch
            self._pop()
            batch.append((head.task, image, seconds))
        return batch

    def step(self) -> None:
        batch = self.next_batch()
        if not batch:
            return
        t = time.perf_counter()
        try:
            preds: list[Prediction | ImageRecord] = list(self.p.infer([image for _, image, _ in batch]))
        except Exception as e:  # noqa: BLE001 - sorted out by _infer_apart
            preds = self._infer_apart(batch, e)
        per_image = (time.perf_counter() - t) / len(batch)
        for (task, image, seconds), pred in zip(batch, preds, strict=True):
            if isinstance(pred, ImageRecord):
                self.writes.append(_finished(pred))
                continue
            timings = {"decode_s": seconds, "inference_s": per_image}
            self.writes.append(self.writer.submit(self.p.write, task, image, pred, timings))

    def _infer_apart(
        self, batch: list[tuple[Task, np.ndarray, float]], error: Exception
    ) -> list[Prediction | ImageRecord]:
        """After a failed batch: errors of the model or the parameters (exit code 2: every image would fail)
        stop the run; anything else is retried image by image and becomes the failing images' records."""
        if isinstance(error, SegcliError) and error.exit_code == EXIT_USAGE:
            raise error
        if len(batch) == 1:
            return [_failure(batch[0][0], error, "inference failed")]
        out: list[Prediction | ImageRecord] = []
        for item in batch:
            try:
                out += self.p.infer([item[1]])
            except Exception as e:  # noqa: BLE001
                out += self._infer_apart([item], e)
        return out

    def finished(self, block: bool) -> Iterator[ImageRecord]:
        while self.writes and (block or self.writes[0].done()):
            yield self.writes.popleft().result()

    def cancel(self) -> bool:
        """Drop what is queued; True when something was left undone."""
        left = bool(self.queue) or next(self.tasks, None) is not None
        for pending in self.queue:
            pending.future.cancel()
        return left


@dataclass(frozen=True)
class Pipeline:
    decode: Decode
    infer: Infer
    write: Write
    batch_size: int = 1
    decoders: int = 2

    def run(
        self,
        tasks: Iterable[Task],
        emit: Callable[[ImageRecord], None],
        should_stop: Callable[[], bool] = lambda: False,
    ) -> bool:
        """Process `tasks`, calling `emit` with each record in input order; `should_stop` is polled between
        batches (what is in flight is finished). Returns True when stopped before the end."""
        with (
            ThreadPoolExecutor(self.decoders, "segcli-decode") as decoders,
            ThreadPoolExecutor(1, "segcli-write") as writer,
        ):
            run = _Run(self, tasks, decoders, writer)
            run.fill()
            while run.queue and not should_stop():
                run.step()
                for record in run.finished(block=False):
                    emit(record)
            interrupted = run.cancel()
            for record in run.finished(block=True):
                emit(record)
        return interrupted
