"""Training data for a unified perceptual parser: images labelled for some tasks only, from several sources.

DATA is a manifest, JSON Lines (`.jsonl`), one image per line, paths relative to the manifest:

    {"image": "ade/0001.jpg", "object": "ade/0001_object.png", "part": "ade/0001_part.png", "scene": "bedroom"}
    {"image": "os/17.jpg", "material": "os/17_material.png", "source": "opensurfaces"}
    {"image": "ade/0999.jpg", "object": "ade/0999_object.png", "split": "val"}

* `object`, `material`: index PNGs of the model's object / material classes (0 = "-", unlabelled; objects
  above 255 need a 16-bit PNG); `part`: the *global* part labels (the model's part classes, 0 = none), read
  only inside objects that have parts (it needs `object`); `scene`: a scene name or index.
* `source` (default: the line's tasks, e.g. "object+part+scene"): batches are drawn per source as the
  authors' `train.py` draws them, each iteration's global batch from one source chosen with probability
  proportional to its number of images; a task that some images of a source lack is unlabelled there.
* `split`: "train" (default) or "val".

A parser also trains on the plain layouts of `train.data` (objects only). Labels come down to the heads'
1/4 resolution at the centre pixel of each 4×4 cell (PIL's nearest, the authors' `segm_downsampling_rate`);
an object's parts count in an image where, as in their loader, at least two of its group's labels are
present in the crop and a part survives the downsampling.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..engine.heads import Heads
from ..errors import ImageError, UsageError
from ..fsutil import read_regular
from ..io.images import image_size, load_image, read_labels
from .augment import Pipeline
from .data import Pair, hold_out
from .parsing_loss import local_parts
from .step import Slice

MAPS = ("object", "part", "material")
TASKS = (*MAPS, "scene")
KEYS = {"image", "source", "split", *TASKS}
STRIDE = 4  # the heads' resolution
MAX_MANIFEST_BYTES = 256 << 20
SOURCE_NAME = re.compile(r"[A-Za-z0-9_.+-]{1,64}")


@dataclass(frozen=True)
class Record:
    image: Path
    source: str
    where: str  # "manifest.jsonl:12", for messages
    object: Path | None = None
    part: Path | None = None
    material: Path | None = None
    scene: int | None = None

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(t for t in TASKS if getattr(self, t) is not None)


@dataclass
class ParsingSplit:
    train: list[Record]
    val: list[Record]
    layout: str
    problems: list[str]


def is_manifest(data: Path) -> bool:
    return Path(data).suffix.lower() == ".jsonl"


def find(data: Path, scenes: tuple[str, ...], val: Path | None, val_split: float | None, seed: int) -> ParsingSplit:
    """The training and validation records of DATA (a manifest, or a plain layout read as objects)."""
    data = Path(data)
    if is_manifest(data):
        records, problems = read_manifest(data, scenes)
        split = ParsingSplit([r for r, s in records if s == "train"], [r for r, s in records if s == "val"],
                             f"manifest {data.name}", problems)  # fmt: skip
    else:
        from .data import find as find_pairs

        pairs = find_pairs(data)
        split = ParsingSplit(_objects(pairs.train), _objects(pairs.val), f"{pairs.layout}, objects", pairs.missing)
    if val is not None:
        extra = find(val, scenes, None, None, seed)
        split.val, split.problems = extra.train + extra.val, split.problems + extra.problems
    elif val_split is not None:
        if split.val:
            raise UsageError("--val-split: the data has validation images already", hint="leave --val-split out")
        split.train, split.val = hold_out(split.train, val_split, seed)
    if not split.train:
        raise UsageError(f"{data}: no training images ({split.layout})", hint="see README, Training a unified parser")
    return split


def _objects(pairs: list[Pair]) -> list[Record]:
    return [Record(p.image, "object", p.name, object=p.mask) for p in pairs]


def read_manifest(path: Path, scenes: tuple[str, ...]) -> tuple[list[tuple[Record, str]], list[str]]:
    """(record, split) per good line, and one problem line per bad one."""
    try:
        text = read_regular(path, MAX_MANIFEST_BYTES).decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: cannot read the manifest ({e})") from None
    out, problems = [], []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(_record(path, n, line, scenes))
        except ValueError as e:
            problems.append(f"{path}:{n}: {e}")
    return out, problems


def _record(path: Path, n: int, line: str, scenes: tuple[str, ...]) -> tuple[Record, str]:
    doc: Any = json.loads(line)  # a JSONDecodeError is a ValueError
    if not isinstance(doc, dict):
        raise ValueError("expected a JSON object per line")
    unknown = sorted(set(doc) - KEYS)
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)} (fields: {', '.join(sorted(KEYS))})")
    if not isinstance(doc.get("image"), str):
        raise ValueError('no "image" path')
    files = {}
    for key in ("image", *MAPS):
        if key in doc:
            if not isinstance(doc[key], str) or not doc[key]:
                raise ValueError(f'"{key}" must be a path')
            files[key] = path.parent / doc[key]
    scene = _scene(doc["scene"], scenes) if "scene" in doc else None
    if "part" in files and "object" not in files:
        raise ValueError('"part" needs "object" (parts are read inside their objects)')
    tasks = [t for t in TASKS if t in files or (t == "scene" and scene is not None)]
    if not tasks:
        raise ValueError("no labels: give at least one of object, part, material, scene")
    source = doc.get("source", "+".join(tasks))
    if not isinstance(source, str) or not SOURCE_NAME.fullmatch(source):
        raise ValueError(f'"source" {source!r}: give 1-64 letters, digits or _.+-')
    split = doc.get("split", "train")
    if split not in ("train", "val"):
        raise ValueError(f'"split" {split!r}: give "train" or "val"')
    maps = {k: files.get(k) for k in MAPS}
    return Record(files["image"], source, f"{path.name}:{n}", scene=scene, **maps), split


def _scene(value: Any, scenes: tuple[str, ...]) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f'"scene" {value!r}: give a scene name or index')
    if isinstance(value, int):
        if not 0 <= value < len(scenes):
            raise ValueError(f'"scene" {value}: outside the {len(scenes)} scenes (0..{len(scenes) - 1})')
        return value
    if value not in scenes:
        raise ValueError(f'"scene" {value!r} is not one of the model\'s {len(scenes)} scenes')
    return scenes.index(value)


def read_maps(record: Record, heads: Heads) -> dict[str, np.ndarray]:
    """The record's label maps (int64 [H, W]) by task; ImageError naming the file for a size or a value that
    does not fit the model."""
    limits = {"object": heads.primary, "part": heads.part_classes, "material": dict(heads.extras)["material"]}
    w, h = image_size(record.image)
    out = {}
    for task in MAPS:
        path = getattr(record, task)
        if path is None:
            continue
        labels = read_labels(path).astype(np.int64)
        if labels.shape != (h, w):
            raise ImageError(f"{path}: {labels.shape[1]}x{labels.shape[0]} {task} mask for a {w}x{h} image")
        bad = labels >= limits[task]
        if bad.any():
            raise ImageError(
                f"{path}: {task} values {np.unique(labels[bad])[:5].tolist()} outside the model's "
                f"{limits[task]} {task} classes (0..{limits[task] - 1}; 0 unlabelled)",
                hint="the manifest's README section says what each mask holds",
            )
        out[task] = labels
    return out


def scan(records: list[Record], heads: Heads) -> tuple[list[Record], list[str]]:
    """Every record read once (header, every mask): the good ones, and one line per problem."""
    good, problems = [], []
    for r in records:
        try:
            read_maps(r, heads)
        except ImageError as e:
            problems.append(f"{r.where}: {e}")
        else:
            good.append(r)
    return good, problems


class SourcePlan:
    """Which source each iteration's global batch comes from (seeded; probability ∝ the source's images),
    and how many earlier iterations drew the same one: a pure function of (seed, iteration)."""

    BLOCK = 4096

    def __init__(self, sizes: list[int], seed: int, iterations: int) -> None:
        self.p = np.asarray(sizes, dtype=np.float64) / sum(sizes)
        self.seed = seed
        blocks = -(-iterations // self.BLOCK)
        counts = [np.bincount(self._block(b), minlength=len(sizes)) for b in range(blocks)]
        self.before = np.cumsum([np.zeros(len(sizes), np.int64), *counts], axis=0)  # [blocks + 1, S]

    def _block(self, b: int) -> np.ndarray:
        if len(self.p) == 1:
            return np.zeros(self.BLOCK, dtype=np.int64)
        return np.random.default_rng([self.seed, 3 << 20, b]).choice(len(self.p), size=self.BLOCK, p=self.p)

    def __call__(self, t: int) -> tuple[int, int]:
        """(source, earlier iterations that drew it) of iteration t."""
        b, i = divmod(t, self.BLOCK)
        block = self._block(b)
        s = int(block[i])
        return s, int(self.before[b, s] + (block[:i] == s).sum())


class ParsingSamples(torch.utils.data.Dataset):
    """Sample g of the run: iteration t = g // global batch draws its source from `SourcePlan`, and its
    k-th draw of that source reads positions k · global batch … of the source's seeded epoch permutations;
    augmented with the generator seeded by (seed, g), as `train.step.Samples`."""

    def __init__(self, records: list[Record], heads: Heads, pipe: Pipeline, seed: int, part: Slice) -> None:
        self.names = sorted({r.source for r in records})
        self.sources = [[r for r in records if r.source == s] for s in self.names]
        self.heads, self.pipe, self.seed, self.part = heads, pipe, seed, part
        self.plan = SourcePlan([len(s) for s in self.sources], seed, part.total)
        self.tasks = [sorted({t for r in s for t in r.tasks}) for s in self.sources]

    def __len__(self) -> int:
        return len(self.part)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        g = self.part.sample(i)
        per_iter = self.part.batch * self.part.ranks * self.part.accumulate
        t, offset = divmod(g, per_iter)
        s, k = self.plan(t)
        pool = self.sources[s]
        q = k * per_iter + offset
        order = np.random.default_rng([self.seed, s, q // len(pool)]).permutation(len(pool))
        record = pool[int(order[q % len(pool)])]
        return sample(record, self.tasks[s], self.heads, self.pipe, np.random.default_rng([self.seed, 1 << 20, g]))


def sample(
    record: Record, tasks: list[str], heads: Heads, pipe: Pipeline, rng: np.random.Generator
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """uint8 image [3, H, W] and the labels its source's batches carry (`tasks`; parts come with objects):
    maps int64 [h, w] at the heads' resolution ("part" local to each object's group), "valid_part" [groups]
    bool, "scene" (-1: none)."""
    image = load_image(record.image)
    maps = read_maps(record, heads)
    blank = np.zeros(image.shape[:2], dtype=np.int64)
    stack = np.stack([maps.get(m, blank) for m in MAPS], axis=2)
    image, stack = pipe(image, stack, rng)  # [H, W, 3] crops, padded with 0 ("-")
    small = torch.from_numpy(np.ascontiguousarray(stack[STRIDE // 2 :: STRIDE, STRIDE // 2 :: STRIDE]))
    out: dict[str, torch.Tensor] = {}  # the source's tasks: the same keys on every rank of an iteration
    if "object" in tasks:
        out["object"] = small[..., 0]
    if "material" in tasks:
        out["material"] = small[..., 2]
    if "scene" in tasks:
        out["scene"] = torch.tensor(record.scene if record.scene is not None else -1)
    if "part" in tasks:
        full = torch.from_numpy(np.ascontiguousarray(stack))
        out["part"] = local_parts(small[None, ..., 0], small[None, ..., 1], heads.part_groups, heads.part_classes)[0]
        out["valid_part"] = _valid_parts(full[..., 0], full[..., 1], out["part"], small[..., 0], heads, record)
    return torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1), out


def _valid_parts(
    objects: torch.Tensor, parts: torch.Tensor, local: torch.Tensor, small: torch.Tensor, heads: Heads, record: Record
) -> torch.Tensor:
    """[groups] bool: the authors' two tests — two or more of the group's labels inside the object in the
    crop (`resolve_record`), and a part of it left after the downsampling (`TrainDataset`)."""
    valid = torch.zeros(len(heads.part_groups), dtype=torch.bool)
    if record.part is None:
        return valid
    for g, group in enumerate(heads.part_groups):
        inside = objects == group.object_label
        if not inside.any():
            continue
        present = torch.isin(torch.unique(torch.where(inside, parts, 0)), torch.tensor(group.parts))
        valid[g] = int(present.sum()) >= 2 and bool(((small == group.object_label) & (local > 0)).any())
    return valid
