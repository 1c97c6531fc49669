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
from typing import Any

import numpy as np

from ..engine import Prediction
from ..errors import EXIT_USAGE, ModelOutputError, SegcliError, first_line
from .plan import Task
from .records import ImageRecord

Decode = Callable[[Task], Any]  # an RGB uint8 array [H, W, 3], or a raster for `stream`
Infer = Callable[[list[np.ndarray]], list[Prediction]]
Write = Callable[[Task, np.ndarray, Prediction, dict[str, float]], ImageRecord]
Stream = Callable[[Task, Any, float, Callable[[], bool]], ImageRecord]  # (task, raster, decode s, should_stop)
MODEL_ERRORS = 3  # images with NaN / constant logits, none good before them: the model is broken, stop


def _finished(record: ImageRecord) -> Future:
    fut: Future = Future()
    fut.set_result(record)
    return fut


def _failure(task: Task, error: BaseException, what: str) -> ImageRecord:
    """One input's failure record: a segcli error as it is, anything else named with its type."""
    if isinstance(error, SegcliError):
        reason = str(error) if task.item.source in str(error) else f"{task.item.source}: {error}"
    else:
        reason = f"{task.item.source}: {what} ({first_line(error, typed=True)})"
    return ImageRecord.failed(task.item.source, task.item.name.as_posix(), reason, task.item)


class Stopped(Exception):
    """Raised inside a raster's stream when a stop was requested: it is abandoned, nothing written."""


def _close_opened(fut: Future) -> None:
    """A decoded input nobody will use: close it if it is an opened raster (not an array)."""
    if not fut.cancelled() and fut.exception() is None:
        image = fut.result()[0]
        if not isinstance(image, np.ndarray):
            image.close()


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
        self.succeeded = False  # some image went through the model
        self.should_stop: Callable[[], bool] = lambda: False
        self.stopped_midway = False  # a raster was abandoned part way by a stop request
        self.model_errors = 0  # ModelOutputErrors before the first success

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
            except Exception as e:  # noqa: BLE001 - whatever decoding raised is this image's failure
                if batch:
                    break
                self.writes.append(_finished(_failure(self._pop().task, e, "cannot decode image")))
                continue
            raster = not isinstance(image, np.ndarray)  # opened, not decoded: streamed on its own
            if batch and (raster or image.shape != batch[0][1].shape):
                break  # a different size starts the next batch
            self._pop()
            batch.append((head.task, image, seconds))
            if raster:
                break
        return batch

    def step(self) -> None:
        batch = self.next_batch()
        if not batch:
            return
        if not isinstance(batch[0][1], np.ndarray):
            record = self._stream(*batch[0])
            if record is not None:
                self.writes.append(_finished(record))
            return
        t = time.perf_counter()
        try:
            preds: list[Prediction | ImageRecord] = list(self.p.infer([image for _, image, _ in batch]))
            self.succeeded = True
        except Exception as e:  # noqa: BLE001 - sorted out by _infer_apart
            preds = self._infer_apart(batch, e)
        per_image = (time.perf_counter() - t) / len(batch)
        for (task, image, seconds), pred in zip(batch, preds, strict=True):
            if isinstance(pred, ImageRecord):
                self.writes.append(_finished(pred))
                continue
            timings = {"decode_s": seconds, "inference_s": per_image}
            self.writes.append(self.writer.submit(self.p.write, task, image, pred, timings))

    def _stream(self, task: Task, raster: Any, seconds: float) -> ImageRecord | None:
        """A raster: segmented and written by rows here (its writes cannot wait for the writer thread);
        None when a stop request ended it part way (nothing of it is written)."""
        assert self.p.stream is not None  # decode opened a raster only where a stream takes it
        try:
            record = self.p.stream(task, raster, seconds, self.should_stop)
            self.succeeded = True
            return record
        except Stopped:
            self.stopped_midway = True
            return None
        except Exception as e:  # noqa: BLE001 - sorted out as a batch of one
            failed = self._infer_apart([(task, raster, seconds)], e)[0]
            assert isinstance(failed, ImageRecord)  # a batch of one: its failure record
            return failed
        finally:
            raster.close()

    def _infer_apart(
        self, batch: list[tuple[Task, np.ndarray, float]], error: Exception
    ) -> list[Prediction | ImageRecord]:
        """After a failed batch. Errors of the model or the parameters (exit code 2) stop the run: bad
        logits once the first MODEL_ERRORS images all gave them (one overflowing image should not stop a
        working model), anything else at once (every image would fail). Other errors are retried image by
        image and become the failing images' records."""
        if isinstance(error, ModelOutputError) and not self.succeeded:
            self.model_errors += len(batch)
            if self.model_errors >= MODEL_ERRORS:
                for task, _, _ in batch:  # these images failed too: their records come before the stop
                    self.writes.append(_finished(_failure(task, error, "inference failed")))
                raise ModelOutputError(f"{error.message} (the first {self.model_errors} images)", hint=error.hint)
        elif (
            isinstance(error, SegcliError) and error.exit_code == EXIT_USAGE and not isinstance(error, ModelOutputError)
        ):
            raise error
        if len(batch) == 1:
            return [_failure(batch[0][0], error, "inference failed")]
        out: list[Prediction | ImageRecord] = []
        for item in batch:
            try:
                out += self.p.infer([item[1]])
                self.succeeded = True
            except Exception as e:  # noqa: BLE001
                out += self._infer_apart([item], e)
        return out

    def finished(self, block: bool, keep: int = 0) -> Iterator[ImageRecord]:
        """Records of finished writes, in order; with `block`, waits until at most `keep` are pending."""
        while len(self.writes) > keep and (block or self.writes[0].done()):
            yield self.writes.popleft().result()

    def cancel(self) -> bool:
        """Drop what is queued; True when something was left undone."""
        left = bool(self.queue) or next(self.tasks, None) is not None or self.stopped_midway
        for pending in self.queue:
            pending.future.cancel()
            if pending.decoding:
                pending.future.add_done_callback(_close_opened)
        return left

    def abandon(self) -> Iterator[ImageRecord]:
        """After an error that stops the run: cancel what has not started, and give the records of the
        writes that finish."""
        self.cancel()
        for fut in self.writes:
            fut.cancel()
        while self.writes:
            fut = self.writes.popleft()
            if not fut.cancelled():
                yield fut.result()


@dataclass(frozen=True)
class Pipeline:
    decode: Decode
    infer: Infer
    write: Write
    batch_size: int = 1
    decoders: int = 2
    stream: Stream | None = None  # what segments and writes an input `decode` opened rather than decoded
    prepare: Callable[[list[Task]], None] = lambda tasks: None  # before a run: what decode will be asked for
    release: Callable[[], None] = lambda: None  # after a run: what decode opened (a video's reader) closed

    def run(
        self,
        tasks: Iterable[Task],
        emit: Callable[[ImageRecord], None],
        should_stop: Callable[[], bool] = lambda: False,
    ) -> bool:
        """Process `tasks`, calling `emit` with each record in input order; `should_stop` is polled between
        batches (what is in flight is finished). Returns True when stopped before the end. At most
        `batch_size + 2` finished predictions wait for the writer (memory stays bounded). An exception that
        stops the run is raised after the records of the writes already under way are emitted."""
        tasks = list(tasks)
        self.prepare(tasks)
        try:
            return self._run(tasks, emit, should_stop)
        finally:
            self.release()

    def _run(self, tasks: list[Task], emit: Callable[[ImageRecord], None], should_stop: Callable[[], bool]) -> bool:
        with (
            ThreadPoolExecutor(self.decoders, "segcli-decode") as decoders,
            ThreadPoolExecutor(1, "segcli-write") as writer,
        ):
            run = _Run(self, tasks, decoders, writer)
            run.should_stop = should_stop
            try:
                run.fill()
                while run.queue and not should_stop():
                    for record in run.finished(block=True, keep=self.batch_size + 2):
                        emit(record)
                    run.step()
                    for record in run.finished(block=False):
                        emit(record)
            except KeyboardInterrupt:
                run.cancel()
                for fut in run.writes:
                    fut.cancel()
                raise
            except BaseException:
                for record in run.abandon():
                    emit(record)
                raise
            interrupted = run.cancel()
            for record in run.finished(block=True):
                emit(record)
        return interrupted
