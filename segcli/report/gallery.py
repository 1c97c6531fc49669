"""`segcli predict --report`: OUT/index.html (the run, its class distribution, parameters, failures and the
first page of the gallery) and OUT/segcli-report/page-N.html, thumbnails in OUT/segcli-report/thumbs/.

Thumbnails (the image, its overlay, its mask; at most 256 pixels a side) are made by the writer while the
image is in memory; images skipped as done before get theirs from their files when the report is written.
Links within OUT are relative and percent-encoded, so the folder can be moved or served as it is; links to the
input photos are `LINKS`: absolute file URIs (the default: they survive moving OUT on this machine), relative
paths (OUT served together with the inputs) or copies in OUT/segcli-report/inputs/ (OUT taken elsewhere).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from PIL import Image

from ..fsutil import atomic_path, atomic_write_bytes, check_inside
from ..loading.classes import ClassSet

FOLDER = "segcli-report"  # a run-level name (layout.RUN_FILES): input folders never take it
PAGE_SIZE = 60
THUMB = 256
TOP = 3  # classes listed per image
KINDS = {"image": ".jpg", "overlay": ".jpg", "mask": ".png"}
LINKS = ("absolute", "relative", "copy")  # how the report links to the input photos (--report-inputs)


def save(out: Path, path: Path, data: bytes) -> None:
    """Write a report file under `out` (atomically; never through a symbolic link planted on the way)."""
    check_inside(out, path)
    atomic_write_bytes(path, data)


def thumb_key(png: Path, out: Path) -> str:
    """The thumbnails' file name stem of the image whose palette PNG is `png`."""
    return hashlib.sha256(png.relative_to(out).as_posix().encode()).hexdigest()[:24]


def thumb_size(h: int, w: int) -> tuple[int, int]:
    """(width, height) of a thumbnail of an h × w picture: at most THUMB pixels a side, never enlarged."""
    scale = min(1.0, THUMB / max(h, w))
    return max(1, round(w * scale)), max(1, round(h * scale))


def thumbnails(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float) -> dict[str, bytes]:
    """image / overlay JPEGs and the mask PNG at most THUMB pixels a side (the mask resized by nearest)."""
    size = thumb_size(*labels.shape)
    small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0))
    idx = np.asarray(Image.fromarray(labels.astype(np.int32)).resize(size, Image.Resampling.NEAREST))
    colours = np.concatenate([palette, np.zeros((1, 3), palette.dtype)])[
        np.clip(idx, 0, len(palette))
    ]  # ignored: black
    blend = np.clip(small * (1 - alpha) + colours * alpha, 0, 255).astype(np.uint8)
    out = {}
    for kind, array in (("image", small), ("overlay", blend), ("mask", colours.astype(np.uint8))):
        buf = io.BytesIO()
        Image.fromarray(array).save(buf, format="PNG" if kind == "mask" else "JPEG", quality=85)
        out[kind] = buf.getvalue()
    return out


@dataclass
class Entry:
    """One image of the gallery (done in this run or before)."""

    input: Path
    name: str
    status: str
    outputs: dict[str, Path]
    counts: np.ndarray | None
    key: str = ""
    top: list[dict[str, Any]] = field(default_factory=list)
    copy: Path | None = None  # the input's copy in the report (links "copy")
    uncertain: float | None = None  # --save confidence: the fraction of pixels below --low-confidence
    url: str | None = None  # an image read from a URL: linked as such, never copied or read again


def _top(counts: np.ndarray | None, classes: ClassSet) -> list[dict[str, Any]]:
    if counts is None or not counts.sum():
        return []
    order = np.argsort(-counts, kind="stable")[:TOP]
    total = float(counts.sum())
    return [
        {
            "name": classes.classes[i],
            "fraction": counts[i] / total,
            "color": "#{:02x}{:02x}{:02x}".format(*classes.palette[i]),
        }
        for i in order
        if counts[i]
    ]


def _ensure_thumbs(entry: Entry, out: Path, palette: np.ndarray, alpha: float) -> None:
    """Thumbnails of an image done before, from its input and its palette PNG (nothing if unreadable)."""
    from ..io.images import load_image, read_labels

    folder = out / FOLDER / "thumbs"
    if entry.url is not None or all((folder / f"{entry.key}-{k}{ext}").is_file() for k, ext in KINDS.items()):
        return
    try:
        labels = read_labels(entry.outputs["png"])
        image = load_image(entry.input)
    except Exception:  # noqa: BLE001 - a report shows what it can: a missing thumbnail is drawn as such
        return
    if image.shape[:2] != labels.shape:
        return
    with contextlib.suppress(OSError):
        for kind, data in thumbnails(image, labels, palette, alpha).items():
            save(out, folder / f"{entry.key}-{kind}{KINDS[kind]}", data)


def _copy_input(entry: Entry, out: Path) -> Path | None:
    """The input copied to OUT/segcli-report/inputs/<key><ext> (kept when a copy of its size is there);
    None when it cannot be read or written (the link then stays absolute)."""
    if entry.url is not None:
        return None
    ext = entry.input.suffix.lower() if re.fullmatch(r"\.[A-Za-z0-9]{1,8}", entry.input.suffix) else ""
    target = out / FOLDER / "inputs" / f"{entry.key}{ext}"
    try:
        check_inside(out, target)
        if target.is_file() and target.stat().st_size == entry.input.stat().st_size:
            return target
        with atomic_path(target) as tmp:
            shutil.copyfile(entry.input, tmp)
    except OSError:
        return None
    return target


def _href(target: Path, page_dir: Path) -> str:
    return quote(Path(os.path.relpath(os.path.abspath(target), os.path.abspath(page_dir))).as_posix())


def _input_href(e: Entry, page_dir: Path, links: str) -> str:
    if e.url is not None:
        return e.url
    if links == "relative":
        return _href(e.input, page_dir)
    if links == "copy" and e.copy is not None:
        return _href(e.copy, page_dir)
    return Path(os.path.abspath(e.input)).as_uri()


def _entry_view(e: Entry, out: Path, page_dir: Path, links: str) -> dict[str, Any]:
    thumbs = {k: _href(out / FOLDER / "thumbs" / f"{e.key}-{k}{ext}", page_dir) for k, ext in KINDS.items()}
    png = e.outputs["png"]
    return {
        "name": e.name,
        "status": e.status,
        "thumbs": thumbs,
        "top": e.top,
        "input_href": _input_href(e, page_dir, links),
        "overlay_href": _href(e.outputs.get("overlay", png), page_dir),
        "mask_href": _href(png, page_dir),
        "uncertain": e.uncertain,
    }


def _text(value: Any) -> str:
    """A parameter as a person reads it: yes / no, none, lists comma-separated, mappings as key: value."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value) or "none"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_text(v)}" for k, v in value.items()) or "none"
    return str(value)


def duration(seconds: float) -> str:
    """12.3 s, 38 min 17 s, 2 h 05 min."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def time_text(summary: dict[str, Any]) -> str:
    """The run's time as a person reads it: the whole run, where it went, what this run segmented."""
    setup = summary.get("setup_seconds") or {}
    steps = [
        (label, setup.get(key))
        for key, label in (("load_model", "loading the model"), ("choose_backend", "choosing the backend"))
    ]
    parts = [f"{label} {duration(s)}" for label, s in [*steps, ("segmenting", summary["seconds"])] if s]
    done, before = summary["counts"]["done"], summary["counts"]["skipped"]
    rate = summary.get("images_per_second")
    if done:
        what = f"{done} image{'s' * (done != 1)} segmented in this run" + (f", {rate:.2f} images/s" if rate else "")
    else:
        what = "no image segmented in this run"
    if before:
        what += f"; {before} done before (skipped)"
    return f"{duration(summary.get('wall_seconds') or summary['seconds'])} in all ({', '.join(parts)}); {what}"


def _parameters(summary: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [(k, _text(v)) for k, v in summary["inference"].items()]
    return [*rows, ("save", _text(summary["save"])), ("software", _text(summary["software"]))]


def _charts(summary: dict[str, Any], classes: ClassSet, scenes: bool) -> dict[str, str | None]:
    from . import charts

    top = summary["classes"][:30]
    chart = None
    if top:
        chart = charts.bars(
            [c["name"] for c in top],
            [c["fraction"] for c in top],
            title=f"Pixels per class ({len(top)} largest of {len(summary['classes'])} present)",
            xlabel="fraction of all labelled pixels",
            colors=[classes.palette[c["index"]] for c in top],
            percent=True,
            salt="classes",
        )
    scene_chart = None
    if scenes and summary.get("scenes"):
        s = summary["scenes"][:30]
        scene_chart = charts.bars(
            [c["name"] for c in s],
            [c["images"] for c in s],
            title="Most probable scene",
            xlabel="images",
            salt="scenes",
        )
    return {"class_chart": chart, "scene_chart": scene_chart}


def write(
    out: Path,
    entries: list[Entry],
    summary: dict[str, Any],
    classes: ClassSet,
    alpha: float,
    links_mode: str = "absolute",
) -> Path:
    """The report's pages (`links_mode`: one of LINKS); with the images' uncertain fractions, the gallery
    also most uncertain first (segcli-report/uncertain-N.html); returns OUT/index.html."""
    from .html import render

    for e in entries:
        e.key, e.top = thumb_key(e.outputs["png"], out), _top(e.counts, classes)
        _ensure_thumbs(e, out, classes.palette_array, alpha)
        if links_mode == "copy":
            e.copy = _copy_input(e, out)
    n_pages = max(1, -(-len(entries) // PAGE_SIZE))
    orders = {
        "input": ([out / "index.html", *(out / FOLDER / f"page-{n}.html" for n in range(2, n_pages + 1))], entries)
    }
    if any(e.uncertain is not None for e in entries):  # the images most worth reviewing first
        worst = sorted(entries, key=lambda e: -e.uncertain if e.uncertain is not None else 1.0)
        orders["uncertain"] = ([out / FOLDER / f"uncertain-{n}.html" for n in range(1, n_pages + 1)], worst)
    common = {
        "out_name": str(out),
        "model": summary["model"],
        "preset": summary["preset"],
        "counts": summary["counts"],
        "interrupted": summary["interrupted"],
        "time": time_text(summary),
        "parameters": _parameters(summary),
        "failures": summary["failures"],
        "total_entries": len(entries),
        **_charts(summary, classes, "scenes" in summary),
    }
    for order, (page_paths, ordered) in orders.items():
        for number, path in enumerate(page_paths, start=1):
            chunk = ordered[(number - 1) * PAGE_SIZE : number * PAGE_SIZE]
            pages = [{"number": i, "href": _href(p, path.parent)} for i, p in enumerate(page_paths, start=1)]
            links = {name: _href(paths[0], path.parent) for name, (paths, _) in orders.items()}
            html = render(
                "predict.html",
                title=f"segcli predict — {out.name or out}",
                overview=order == "input" and number == 1,
                page=number,
                pages=pages,
                order=order,
                orders=links if len(orders) > 1 else {},
                entries=[_entry_view(e, out, path.parent, links_mode) for e in chunk],
                first=(number - 1) * PAGE_SIZE + 1 if chunk else 0,
                last=(number - 1) * PAGE_SIZE + len(chunk),
                **common,
            )
            save(out, path, html.encode("utf-8"))
    page_paths = orders["input"][0]
    return page_paths[0]
