"""Video files (PyAV, the `[video]` extra): probed, read frame by frame, and overlay videos written.

A video's frames are numbered 0, 1, … in presentation order; `probe` lists their timestamps from the
container's packets (no decoding), so frame numbers and times are known before any frame is decoded, and a
resumed run seeks to the first frame it still needs. `FrameReader` decodes forward (seeking when a frame far
ahead or behind is asked for) and hands out only the frames asked for: what it holds is bounded by the
requests in flight. A packet the decoder rejects is that frame's error alone.

Overlay videos (`VideoWriter`): H.264 (libx264, CRF 18, 4:2:0; 4:4:4 when a side is odd) where PyAV's FFmpeg
has it, else FFmpeg's own MPEG-4 part 2 encoder (`mpeg4`, quality 2) — both in an .mp4 container, at the
source's size, each frame at its source timestamp.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ImageError, UsageError, first_line

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".wmv")
MAX_FRAMES = 10_000_000  # packets a probe lists, at most (a 92-hour video at 30 fps)
SEEK_GAP = 120  # frames ahead beyond which the reader seeks instead of decoding its way there
_ERRNO = re.compile(r"^\[Errno -?\d+\] ")  # PyAV's prefix of FFmpeg's messages
_EPS = 1e-6  # seconds: timestamps compared with this slack (0.1 + 0.2 != 0.3)


def is_video_path(path: Path | str) -> bool:
    return Path(str(path)).suffix.lower() in VIDEO_EXTENSIONS


def video_available() -> bool:
    return importlib.util.find_spec("av") is not None


def av() -> Any:
    """PyAV, or a usage error saying how to install it."""
    try:
        import av as module
    except ImportError:
        raise UsageError("video inputs need PyAV, which is not installed", hint="pip install 'segcli[video]'") from None
    return module


def parse_time(text: str | float | None, flag: str) -> float | None:
    """Seconds from `12.5`, `1:30` or `01:02:03.5`; None stays None."""
    if text is None or isinstance(text, (int, float)):
        return None if text is None else float(text)
    try:
        parts = [float(p) for p in text.strip().split(":")]
        if not 1 <= len(parts) <= 3 or any(p < 0 or p != p for p in parts) or any(p >= 60 for p in parts[1:]):
            raise ValueError
    except ValueError:
        raise UsageError(
            f"{flag} {text!r}: give seconds or [HH:]MM:SS", hint=f"e.g. {flag} 12.5 or {flag} 1:30"
        ) from None
    seconds = 0.0
    for p in parts:
        seconds = seconds * 60 + p
    return seconds


@dataclass(frozen=True)
class Selection:
    """Which frames of each video are segmented: every `every`-th, or about `fps` per second, within
    [`start`, `end`) seconds from the first frame."""

    every: int = 1
    fps: float | None = None
    start: float = 0.0
    end: float | None = None

    @classmethod
    def parse(
        cls, every: int | None, fps: float | None, start: str | float | None, end: str | float | None
    ) -> Selection:
        if every is not None and fps is not None:
            raise UsageError("--every and --fps both choose frames", hint="give one of them")
        if every is not None and not 1 <= every <= 1_000_000:
            raise UsageError(f"--every {every}: give 1 or more", hint="--every 10 segments frames 0, 10, 20, …")
        if fps is not None and not 0 < fps < float("inf"):
            raise UsageError(f"--fps {fps}: give frames per second above 0", hint="e.g. --fps 2")
        a, b = parse_time(start, "--start") or 0.0, parse_time(end, "--end")
        if b is not None and b <= a:
            raise UsageError(f"--end {end} is not after --start {start or 0}")
        return cls(every or 1, fps, a, b)

    @property
    def default(self) -> bool:
        return self == Selection()

    def frames(self, times: list[float]) -> list[int]:
        """The frame numbers chosen among frames at `times` (seconds, increasing)."""
        inside = [
            i for i, t in enumerate(times) if t >= self.start - _EPS and (self.end is None or t < self.end - _EPS)
        ]
        if self.fps is None:
            return inside[:: self.every]
        chosen, due, step = [], self.start, 1.0 / self.fps
        for i in inside:
            if times[i] >= due - _EPS:
                chosen.append(i)
                while due <= times[i] + _EPS:  # one frame per 1/fps slot
                    due += step
        return chosen


@dataclass(frozen=True)
class VideoInfo:
    """A video's first video stream: its size, codec, frame rate and every frame's timestamp."""

    path: Path
    width: int
    height: int
    codec: str
    fps: float | None  # the stream's average frame rate
    time_base: Fraction
    pts: tuple[int, ...]  # each frame's presentation timestamp (time_base units), in presentation order

    def time(self, index: int) -> float:
        """Seconds from the first frame."""
        return float((self.pts[index] - self.pts[0]) * self.time_base)

    def times(self) -> list[float]:
        return [self.time(i) for i in range(len(self.pts))]


def check_size(path: Path, w: int, h: int, max_pixels: int) -> None:
    """An ImageError when frames of w×h exceed `max_pixels` (checked before any frame is decoded)."""
    if w * h > max_pixels:
        raise ImageError(
            f"{path}: frames of {w}x{h} = {w * h} pixels exceed --max-pixels {max_pixels}",
            hint="raise --max-pixels if the video is trusted",
        )


def probe(path: Path, max_pixels: int) -> VideoInfo:
    """The video at `path`, from its packets (nothing decoded); an ImageError naming the file and the fix
    when it is not a video PyAV reads, has no frames or timestamps, or frames above `max_pixels`."""
    module = av()
    try:
        with module.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.video:
                raise ImageError(f"{path}: no video stream in it", hint="give a video file (mp4, mkv, mov, avi, webm)")
            stream = container.streams.video[0]
            w, h = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
            if w < 1 or h < 1:
                raise ImageError(
                    f"{path}: the video stream has no frame size", hint="re-encode it (ffmpeg -i IN OUT.mp4)"
                )
            check_size(path, w, h, max_pixels)
            stamps = _stamps(path, container.demux(stream))
            codec, rate, base = stream.codec_context.name, stream.average_rate, stream.time_base
    except module.FFmpegError as e:
        raise ImageError(f"{path}: not a video PyAV can read ({first_line(e)})", hint="check the file") from None
    if not stamps:
        raise ImageError(f"{path}: the video has no frames")
    return VideoInfo(path, w, h, str(codec), float(rate) if rate else None, Fraction(base), tuple(stamps))


def _stamps(path: Path, packets: Iterator[Any]) -> list[int]:
    stamps: set[int] = set()
    for packet in packets:
        if packet.size == 0:
            continue
        pts = packet.pts if packet.pts is not None else packet.dts
        if pts is None:
            raise ImageError(
                f"{path}: its packets carry no timestamps, so its frames cannot be numbered",
                hint="remux it: ffmpeg -i IN -c copy OUT.mkv",
            )
        stamps.add(int(pts))
        if len(stamps) > MAX_FRAMES:
            raise ImageError(f"{path}: more than {MAX_FRAMES} frames", hint="cut it first (ffmpeg -ss … -t …)")
    return sorted(stamps)


class FrameReader:
    """The `wanted` frames of one video as RGB uint8 arrays [H, W, 3], each handed out once (thread-safe).
    Closes the file once every wanted frame has been handed out."""

    def __init__(self, info: VideoInfo, wanted: set[int]) -> None:
        self.info, self.pending = info, set(wanted)
        self.index_of = {pts: i for i, pts in enumerate(info.pts)}
        self.held: dict[int, np.ndarray | Exception] = {}  # decoded (or failed) ahead of their request
        self.lock = threading.Lock()
        self.container: Any = None
        self.decoded: Iterator[tuple[int | None, Any]] | None = None
        self.last = -1  # the frame decoded last (-1: none since opening or seeking)

    def frame(self, index: int) -> np.ndarray:
        with self.lock:
            try:
                got = self._get(index)
            finally:
                self.pending.discard(index)
                self.held.pop(index, None)
                if not self.pending:
                    self.close()
        if isinstance(got, Exception):
            raise got
        return got

    def _get(self, index: int) -> np.ndarray | Exception:
        if index in self.held:
            return self.held[index]
        if self.decoded is None or index <= self.last or index > self.last + SEEK_GAP:
            self._seek(index)
        assert self.decoded is not None
        for i, f in self.decoded:
            if i is None or (i < index and i not in self.pending):
                continue
            self.last = max(self.last, i)
            got = self._rgb(i, f)
            if i == index:
                return got
            if i in self.pending:
                self.held[i] = got  # asked for later: decoded already
            if i > index:
                return self._error(index, "the decoder gave no picture for it")
        self.decoded = None
        return self._error(index, "the video ends before it (truncated?)")

    def _seek(self, index: int) -> None:
        module = av()
        if self.container is None:
            self.container = module.open(str(self.info.path), metadata_errors="ignore")
            self.container.streams.video[0].thread_type = "AUTO"  # slice and frame threads
        stream = self.container.streams.video[0]
        self.container.seek(self.info.pts[index], stream=stream, backward=True, any_frame=False)
        self.decoded, self.last = self._decode(stream, module.FFmpegError), -1

    def _decode(self, stream: Any, errors: type[Exception]) -> Iterator[tuple[int | None, Any]]:
        """(frame number, decoded frame or the decoder's error) from the current position on."""
        for packet in self.container.demux(stream):
            try:
                for f in packet.decode():
                    yield self.index_of.get(f.pts), f
            except errors as e:
                pts = packet.pts if packet.pts is not None else packet.dts
                yield self.index_of.get(pts), e

    def _rgb(self, index: int, f: Any) -> np.ndarray | Exception:
        if isinstance(f, Exception):
            return self._error(index, f"cannot be decoded ({_ERRNO.sub('', first_line(f))})")
        image = f.to_ndarray(format="rgb24")
        if image.shape[:2] != (self.info.height, self.info.width):
            return self._error(
                index, f"is {image.shape[1]}x{image.shape[0]}, the video {self.info.width}x{self.info.height}"
            )
        return image

    def _error(self, index: int, what: str) -> ImageError:
        return ImageError(f"{self.info.path}: frame {index} ({self.info.time(index):.3f} s) {what}")

    def close(self) -> None:
        if self.container is not None:
            self.container.close()
        self.container, self.decoded, self.held = None, None, {}


def encoder() -> str:
    """The overlay videos' codec: libx264 where PyAV's FFmpeg has it, else FFmpeg's own mpeg4."""
    return "libx264" if "libx264" in av().codecs_available else "mpeg4"


class VideoWriter:
    """An .mp4 of RGB frames [H, W, 3] at given timestamps (`time_base` units, increasing)."""

    def __init__(self, path: Path, info: VideoInfo, comment: str = "") -> None:
        module, codec = av(), encoder()
        self.container = module.open(str(path), "w", format="mp4")
        if comment:
            self.container.metadata["comment"] = comment
        stream = self.container.add_stream(codec, rate=Fraction(info.fps or 25).limit_denominator(100000))
        stream.width, stream.height = info.width, info.height
        odd = info.width % 2 or info.height % 2
        stream.pix_fmt = "yuv444p" if odd and codec == "libx264" else "yuv420p"
        stream.options = {"crf": "18", "preset": "medium"} if codec == "libx264" else {"qscale": "2"}
        stream.codec_context.time_base = info.time_base
        self.stream, self.time_base, self.origin, self.module = stream, info.time_base, info.pts[0], module

    def add(self, image: np.ndarray, pts: int) -> None:
        frame = self.module.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts, frame.time_base = pts - self.origin, self.time_base
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()

    def abandon(self) -> None:
        with contextlib.suppress(Exception):  # a half-written file about to be deleted
            self.container.close()
