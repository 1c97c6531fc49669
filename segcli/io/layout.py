"""The output layout of a batch run: which file each input's outputs go to, injective by construction.

Every input has a relative path `rel` (its folder and file name, extension included; unique per input). Its
outputs are `<out>/<base><suffix>` for the suffixes of `SUFFIXES`, where the base is chosen so that no two
inputs, and no input and a run-level file (`RUN_FILES`: summary.json, ...), ever share a path:

1. the *short* base `<folder>/<stem>` (what users expect: `photo.jpg` → `photo.png`) when none of its output
   paths is claimed by another input (by its short base, or by its full name when that input cannot keep
   its short one), by a run-level file, or is a folder other outputs need;
2. otherwise, in sorted order, the first free one of `<folder>/<file name>` (`x.jpg` → `x.jpg.png`) and
   `<folder>/<file name>~2`, `~3`, … — each checked against every path already taken.

A video (`clip.mp4`) claims, instead of SUFFIXES, its own files (`VIDEO_SUFFIXES`: `clip_overlay.mp4`,
`clip_areas.csv`) and the whole folder `clip/`, where its frames' outputs go (`clip/000123.png`, …): it
keeps that base only when no input lies in such a folder and no other video claims it.

A top-level folder named like a run-level file (`summary.json/…`) is written as `summary.json~/…`. Paths
are compared case-folded (outputs may be copied to case-insensitive file systems). Step 1 keeps only
bases whose outputs collide with nobody's, and step 2 only takes free paths, so the map is injective for
any set of inputs; it depends on the set alone (not on `--save` or `--shard`), so resuming is stable.
`tests/test_layout_names.py` checks this on random adversarial name sets.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path, PurePosixPath

# output kind → suffix after the base (`probs` with --topk K: `_topK.npz`, one K per run)
SUFFIXES = {
    "png": ".png",
    "label": "_label.png",
    "overlay": "_overlay.jpg",
    "probs": "_probs.npy",
    "topk": "_top{k}.npz",
    "json": ".json",
    "part": "_part.png",  # a parsing model's other maps, and their overlays
    "material": "_material.png",
    "part_overlay": "_part_overlay.jpg",
    "material_overlay": "_material_overlay.jpg",
    "geotiff": ".tif",  # rasters: class indices on the input's grid
    "probs_tif": "_probs.tif",  # probs of a raster input (GDAL): uint8-scaled bands on its grid
    "coco": ".coco.json",  # one class per annotation, COCO's compressed RLE (io.coco)
    "confidence": "_confidence.png",  # uint8: 255 × the largest probability
    "entropy": "_entropy.png",  # uint8: 255 × entropy / log K
    "labelstudio": ".ls.json",
    "vector": ".geojson",  # polygons (io.vector); GeoPackage with --vector-format gpkg
    "vector_gpkg": ".gpkg",  # a Label Studio task with brush pre-annotations (io.labelstudio)
    "confidence_tif": "_confidence.tif",  # rasters (GDAL): float32 on the input's grid
    "entropy_tif": "_entropy.tif",
}
OPTIONAL = (
    "label", "overlay", "probs", "json", "part", "material", "part_overlay", "material_overlay", "geotiff", "coco",
    "confidence", "entropy", "labelstudio", "vector",
)  # fmt: skip
# run-level files at the top of --out
RUN_FILES = re.compile(
    r"(summary|coco|coco-results|labelstudio)(-shard-\d+-of-\d+)?\.json|labelstudio(-shard-\d+-of-\d+)?\.xml"
    r"|legend\.png|classes\.json|index\.html|segcli-report",
    re.IGNORECASE,
)
# a video's own files beside its frames' folder `<base>/` (its frames: `<base>/<frame number>` + SUFFIXES)
VIDEO_SUFFIXES = {"video": "_overlay.mp4", "areas": "_areas.csv"}
_TOPK_KEY = "_top#.npz"  # stands for every K when checking collisions


def _keys(base: PurePosixPath, video: bool = False) -> list[str]:
    """Case-folded output paths of a base (the top-k file for any K as one key); a video's: its own files
    and its frames' folder (`<base>`, claimed whole: no file may take that path)."""
    b = base.as_posix()
    if video:
        return [(b + s).casefold() for s in (*VIDEO_SUFFIXES.values(), "")]
    return [(b + (_TOPK_KEY if kind == "topk" else s)).casefold() for kind, s in SUFFIXES.items()]


def _reserved(key: str) -> bool:
    return "/" not in key and RUN_FILES.fullmatch(key) is not None


def _folders(rels: list[PurePosixPath]) -> set[str]:
    """Every folder some output goes into (a file may not take one of these paths)."""
    out = set()
    for rel in rels:
        for parent in rel.parents:
            if parent.as_posix() != ".":
                out.add(parent.as_posix().casefold())
    return out


def _short(rel: PurePosixPath) -> PurePosixPath:
    return rel.parent / rel.stem if rel.suffix else rel


def _needs_full_names(rels: list[PurePosixPath], folders: set[str], videos: list[bool]) -> set[int]:
    """Inputs that cannot keep the short base: one of its outputs is claimed twice (by short bases, or by
    the full names of inputs already known to need them), reserved, or a folder. Grown to a fixed point."""
    full: set[int] = set()
    while True:
        bases = [rels[i] if i in full else _short(rels[i]) for i in range(len(rels))]
        keys = [_keys(base, video) for base, video in zip(bases, videos, strict=True)]
        claims = Counter(key for k in keys for key in set(k))
        more = {
            i
            for i in range(len(rels))
            if i not in full and any(claims[k] > 1 or _reserved(k) or k in folders for k in keys[i])
        }
        if not more:
            return full
        full |= more


def _top_folders(rels: list[PurePosixPath]) -> list[PurePosixPath]:
    """`rels` with top-level folders named like a run-level file (`summary.json/…`) renamed `<name>~`,
    `<name>~2`, … (a name no other top-level folder or file has): run-level files are files at the top."""
    taken = {rel.parts[0].casefold() for rel in rels}
    renamed: dict[str, str] = {}
    for top in sorted({rel.parts[0] for rel in rels if len(rel.parts) > 1 and RUN_FILES.fullmatch(rel.parts[0])}):
        n, name = 1, f"{top}~"
        while name.casefold() in taken:
            n += 1
            name = f"{top}~{n}"
        taken.add(name.casefold())
        renamed[top] = name
    return [
        PurePosixPath(renamed[rel.parts[0]], *rel.parts[1:]) if rel.parts[0] in renamed and len(rel.parts) > 1 else rel
        for rel in rels
    ]


def assign_bases(rels: list[PurePosixPath]) -> list[PurePosixPath]:
    """The output base of each relative input path (same order), per the module docstring; a video's
    (`video.VIDEO_EXTENSIONS`) is the folder of its frames' outputs."""
    from .video import is_video_path

    videos = [is_video_path(rel.name) for rel in rels]
    rels = _top_folders(rels)
    folders = _folders(rels)
    full = _needs_full_names(rels, folders, videos)
    bases = {i: _short(rel) for i, rel in enumerate(rels) if i not in full}
    taken = {key for i, base in bases.items() for key in _keys(base, videos[i])}
    for i in sorted(full, key=lambda i: rels[i].as_posix()):
        n = 1
        while True:
            candidate = rels[i] if n == 1 else rels[i].parent / f"{rels[i].name}~{n}"
            keys = _keys(candidate, videos[i])
            if not any(k in taken or _reserved(k) or k in folders for k in keys):
                break
            n += 1
        bases[i] = candidate
        taken.update(keys)
    return [bases[i] for i in range(len(rels))]


def video_paths(out: Path, base: PurePosixPath) -> dict[str, Path]:
    """A video's own files (`--save video`): the overlay video and the per-frame class areas."""
    return {kind: out / f"{base.as_posix()}{suffix}" for kind, suffix in VIDEO_SUFFIXES.items()}


def frame_base(base: PurePosixPath, frame: int) -> PurePosixPath:
    """The output base of a video's frame: `<video base>/<frame number, 6 digits or more>`."""
    return base / f"{frame:06d}"


def output_paths(
    out: Path, base: PurePosixPath, kinds: frozenset[str], topk: int | None, raster: bool = False, gpkg: bool = False
) -> dict[str, Path]:
    """The files of one input: the palette PNG always, then each kind of `kinds` (see `OPTIONAL`); `raster`:
    an input GDAL reads, whose probabilities are a GeoTIFF."""
    wanted = ["png", *(k for k in OPTIONAL if k in kinds)]
    paths = {}
    for kind in wanted:
        if kind == "probs" and topk:
            suffix = SUFFIXES["topk"].format(k=topk)
        elif kind == "vector" and gpkg:
            suffix = SUFFIXES["vector_gpkg"]
        else:
            suffix = SUFFIXES[f"{kind}_tif" if kind in ("probs", "confidence", "entropy") and raster else kind]
        paths[kind] = out / f"{base.as_posix()}{suffix}"
    return paths
