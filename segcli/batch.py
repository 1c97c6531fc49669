"""Batch prediction over files and folders: discovery, per-image outputs, failures that do not stop the batch."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .api import Segmenter
from .errors import SegcliError
from .outputs import atomic_write_bytes, json_bytes, label_png, summary

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})


@dataclass(frozen=True)
class Item:
    path: Path  # the image
    rel: Path  # output location relative to --out, without suffix: <relative folder>/<stem>


@dataclass
class Discovery:
    items: list[Item] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (input, reason)


def discover(inputs: list[str], extensions: frozenset[str] = IMAGE_EXTENSIONS) -> Discovery:
    """Images named by `inputs` (files, or folders searched recursively), in a deterministic order.

    A folder's images keep their path relative to that folder; a file given directly keeps its stem.
    Each image is listed once, however many times it is named.
    """
    found = Discovery()
    seen: set[Path] = set()
    for arg in inputs:
        p = Path(arg)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in extensions)
            pairs = [(f, f.relative_to(p).with_suffix("")) for f in files]
        elif p.is_file():
            pairs = [(p, Path(p.stem))]
        else:
            found.errors.append((arg, "no such file or directory"))
            continue
        for f, rel in pairs:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                found.items.append(Item(f, rel))
    return found


@dataclass
class BatchResult:
    done: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def model_record(seg: Segmenter) -> dict[str, Any]:
    o = seg.info.origin
    return {
        "name": seg.info.name,
        "source": o.kind,
        "repo": o.repo,
        "revision": o.revision,
        "sha256": o.sha256,
        "path": o.path,
    }


def run(
    seg: Segmenter,
    items: list[Item],
    out_dir: Path,
    *,
    preset: str | None = None,
    on_error: Callable[[str, str], None] | None = None,
    progress: bool = True,
) -> BatchResult:
    """Segment every item; write `<out>/<rel>.png` (palette PNG) and `<out>/<rel>.json` (summary)."""
    from tqdm import tqdm

    preset_name = seg.preset(preset).name
    record = model_record(seg)
    result = BatchResult()
    claimed: dict[Path, Path] = {}
    bar = tqdm(items, unit="img", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    for item in bar:
        png = out_dir / item.rel.with_suffix(".png")
        try:
            if png in claimed:
                raise SegcliError(f"{item.path}: output {png} is already written for {claimed[png]}")
            claimed[png] = item.path
            labels = seg.predict(item.path, preset_name)
            atomic_write_bytes(png, label_png(labels, seg.palette))
            doc = summary(
                input_path=str(item.path), labels=labels, classes=seg.classes, model=record, preset=preset_name
            )
            atomic_write_bytes(png.with_suffix(".json"), json_bytes(doc))
            result.done += 1
        except SegcliError as e:
            reason = str(e)
        except OSError as e:  # writing the outputs: permissions, disk full
            reason = f"{item.path}: cannot write outputs under {out_dir} ({e.strerror or e})"
        else:
            continue
        result.failed.append((str(item.path), reason))
        if on_error:
            on_error(str(item.path), reason)
    return result
