"""Videos in a batch run: each video becomes its chosen frames, segmented like photos; `--save video` adds
an overlay video and a per-frame class-area CSV, made from the frames' outputs once all of them are there.

    clip.mp4 → clip/000000.png, clip/000000.json, … (what a photo gets, per frame; records carry
               "frame": {"index", "time_s"})
               clip_overlay.mp4 (the chosen frames at their own timestamps), clip_areas.csv (--save video)

`expand` turns a discovery's videos into frame items (probed: nothing decoded); `Frames` decodes them in a
batch run's decode threads, one `FrameReader` per video, holding only frames asked for; `write_video_files`
re-reads each finished video with its frames' palette PNGs.
"""

from __future__ import annotations

import csv
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import SegcliError, first_line
from ..fsutil import atomic_path, check_inside
from ..io.inputs import Discovery, Item
from ..io.layout import frame_base, video_paths
from ..io.outputs import overlay_rgb, read_fingerprint
from ..io.video import (
    FrameReader,
    Selection,
    VideoInfo,
    VideoWriter,
    check_size,
    encoder,
    is_video_path,
    probe,
)
from ..loading.classes import ClassSet
from .plan import Task

_PROBED: dict[tuple[str, int, int], VideoInfo] = {}  # (path, size, mtime_ns) → info: probed once per process
_PROBED_MAX = 256
_LOCK = threading.Lock()


def probed(path: Path, max_pixels: int) -> VideoInfo:
    """`probe`, remembered while the file is unchanged."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _LOCK:
        info = _PROBED.get(key)
    if info is None:
        info = probe(path, max_pixels)
        with _LOCK:
            if len(_PROBED) >= _PROBED_MAX:
                _PROBED.clear()
            _PROBED[key] = info
    check_size(path, info.width, info.height, max_pixels)  # remembered under another run's limit
    return info


def expand(found: Discovery, selection: Selection, max_pixels: int) -> int:
    """Replace `found`'s videos by their chosen frames (in order); a video that cannot be read is one error.
    Returns how many videos were expanded."""
    items: list[Item] = []
    videos = 0
    for it in found.items:
        if not is_video_path(it.path):
            items.append(it)
            continue
        if it.remote is not None:
            found.errors.append((it.source, "videos are read from local files only: download it first"))
            continue
        try:
            info = probed(it.path, max_pixels)
        except (SegcliError, OSError) as e:
            text = str(e) if isinstance(e, SegcliError) else f"cannot be read ({e.strerror or e})"
            found.errors.append((str(it.path), text.removeprefix(f"{it.path}: ")))
            continue
        times = info.times()
        chosen = selection.frames(times)
        if not chosen:
            span = f"{times[-1]:.3f} s" if len(times) > 1 else "one frame"
            found.errors.append(
                (str(it.path), f"no frame chosen by --start/--end/--every/--fps (the video spans {span})")
            )
            continue
        videos += 1
        items += [
            replace(it, name=frame_base(it.name, i), rel=it.rel / f"{i:06d}", frame=i, time=times[i]) for i in chosen
        ]
    found.items = items
    return videos


class Frames:
    """The frames a batch run's tasks ask for, one reader per video (see `FrameReader`)."""

    def __init__(self, max_pixels: int) -> None:
        self.max_pixels = max_pixels
        self.readers: dict[Path, FrameReader] = {}
        self.lock = threading.Lock()

    def want(self, tasks: list[Task]) -> None:
        """Get ready for `tasks` (those decided already are not decoded)."""
        wanted: dict[Path, set[int]] = {}
        for t in tasks:
            if t.item.frame is not None and t.record is None:
                wanted.setdefault(t.item.path, set()).add(t.item.frame)
        with self.lock:
            for path, frames in wanted.items():
                if path in self.readers:
                    self.readers[path].pending |= frames
                    continue
                try:
                    self.readers[path] = FrameReader(probed(path, self.max_pixels), frames)
                except (SegcliError, OSError):  # gone or changed since discovery: each frame's decode says so
                    continue

    def decode(self, item: Item) -> np.ndarray:
        assert item.frame is not None
        with self.lock:
            reader = self.readers.get(item.path)
            if reader is None:  # not announced by `want`: read on its own
                reader = self.readers[item.path] = FrameReader(probed(item.path, self.max_pixels), {item.frame})
        return reader.frame(item.frame)

    def close(self) -> None:
        with self.lock:
            for reader in self.readers.values():
                reader.close()
            self.readers.clear()


@dataclass(frozen=True)
class VideoOutputs:
    """What `write_video_files` needs of the run."""

    out: Path
    class_set: ClassSet
    alpha: float
    background: int | None
    fingerprint: str  # the frames' palette PNGs made by this run's parameters carry it
    max_pixels: int


def write_video_files(
    items: list[Item],
    run: VideoOutputs,
    touched: set[str],
    failed: set[str],
    inputs: set[Path],
    say: Callable[[str, str], None],
) -> list[str]:
    """Each video's overlay video and area CSV, once every chosen frame is done (now or earlier) or failed
    in this run; kept when both exist and no frame of the video was done now (`touched`: inputs). `failed`:
    names of frames that failed in this run (left out). Returns the problems (one line each)."""
    groups: dict[Path, list[Item]] = {}
    for it in items:
        if it.frame is not None:
            groups.setdefault(it.path, []).append(it)
    problems = []
    for path, frames in groups.items():
        paths = video_paths(run.out, frames[0].name.parent)
        if str(path) not in touched and all(p.is_file() for p in paths.values()):
            continue
        if any(p.resolve() in inputs for p in paths.values()):
            problems.append(f"{path}: its overlay video would overwrite an input; choose another --out")
            continue
        pngs = [(it, run.out / f"{it.name.as_posix()}.png") for it in frames if it.name.as_posix() not in failed]
        missing = [it for it, png in pngs if read_fingerprint(png) != run.fingerprint]
        if missing:
            say("info", f"{path}: overlay video not written: frame {missing[0].frame} and {len(missing) - 1} more "
                        "are not done (failed in an earlier run, or another --shard's); rerun without --shard "
                        "once they are")  # fmt: skip
            continue
        try:
            _write(path, pngs, paths, run)
        except (SegcliError, OSError, ValueError) as e:
            problems.append(f"{paths['video']}: cannot write the overlay video ({first_line(e)})")
            continue
        say("info", f"video: {paths['video']} ({len(pngs)} frames, {encoder()}), {paths['areas'].name}")
    return problems


def _write(path: Path, pngs: list[tuple[Item, Path]], paths: dict[str, Path], run: VideoOutputs) -> None:
    info = probed(path, run.max_pixels)
    k, palette = len(run.class_set.classes), run.class_set.palette_array
    reader = FrameReader(info, {it.frame for it, _ in pngs if it.frame is not None})
    for p in paths.values():
        check_inside(run.out, p)
    with atomic_path(paths["video"]) as tmp_video, atomic_path(paths["areas"]) as tmp_csv:
        writer = VideoWriter(tmp_video, info, comment=f"segcli {run.fingerprint}")
        try:
            with open(tmp_csv, "w", newline="", encoding="utf-8") as f:
                table = csv.writer(f)
                table.writerow(["frame", "time_s", *run.class_set.classes])
                for it, png in pngs:
                    assert it.frame is not None
                    image = reader.frame(it.frame)
                    with Image.open(png) as im:
                        labels = np.asarray(im)  # palette indices [H, W]
                    if labels.shape != image.shape[:2]:
                        raise ValueError(
                            f"{png} is {labels.shape[1]}x{labels.shape[0]}, the frame {image.shape[1]}x{image.shape[0]}"
                        )
                    writer.add(overlay_rgb(image, labels, palette, run.alpha, run.background), info.pts[it.frame])
                    share = np.bincount(labels.ravel(), minlength=k)[:k] / labels.size
                    table.writerow([it.frame, f"{info.time(it.frame):.6f}", *(f"{v:.6f}" for v in share)])
            writer.close()
        except BaseException:
            writer.abandon()
            raise
        finally:
            reader.close()
