"""How a model's output channels split into heads, and how label maps are read from them.

A plain segmentation model has one head: K channels, one softmax, one argmax. A unified perceptual parser
(UPerNet as its authors built it) concatenates several: objects, materials, and one small part head per
object that has parts; each is a softmax group of its own. The part label of a pixel is the argmax inside
the group of the object predicted there, as a global part index (0 where that object has no parts), the
authors' `test.py` reading. Image-level outputs (the scene) travel beside the pixels, not as channels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


def label_dtype(num_classes: int) -> np.dtype:
    return np.dtype(np.uint8 if num_classes <= 256 else np.uint16 if num_classes <= 65536 else np.int32)


@dataclass(frozen=True)
class PartGroup:
    object_label: int  # the object these parts belong to
    parts: tuple[int, ...]  # global part label of each channel, in order (the first is 0, "-")


@dataclass(frozen=True)
class Heads:
    """The channel layout: `primary` classes (the map `labels` is read from), then `extras` (name, classes)
    each a map of its own, then `part_groups` (one softmax group each; read as the `part` map), and
    `image_level` classes per image (0: none)."""

    primary: int
    extras: tuple[tuple[str, int], ...] = ()
    part_groups: tuple[PartGroup, ...] = ()
    image_level: int = 0
    part_classes: int = 0  # size of the global part label set
    _bounds: tuple[int, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        sizes = [self.primary, *(n for _, n in self.extras), *(len(g.parts) for g in self.part_groups)]
        object.__setattr__(self, "_bounds", tuple(np.cumsum([0, *sizes]).tolist()))

    @classmethod
    def single(cls, num_classes: int) -> Heads:
        return cls(num_classes)

    @property
    def channels(self) -> int:
        return self._bounds[-1]

    @property
    def grouped(self) -> bool:
        return len(self._bounds) > 2

    @property
    def maps(self) -> tuple[str, ...]:
        """The label maps this layout gives besides `labels`."""
        return (*(name for name, _ in self.extras), *(("part",) if self.part_groups else ()))

    def softmax(self, t: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """Softmax within each group along `dim`."""
        if not self.grouped:
            return t.softmax(dim)
        b = self._bounds
        return torch.cat([t.narrow(dim, b[i], b[i + 1] - b[i]).softmax(dim) for i in range(len(b) - 1)], dim)

    def labels(self, t: torch.Tensor) -> dict[str, np.ndarray]:
        """Label maps of values [C, h, w] (logits or probabilities: the argmax of each group is the same)."""
        b = self._bounds
        objects = t[: self.primary].max(0).indices
        out = {"labels": objects.cpu().numpy().astype(label_dtype(self.primary), copy=False)}
        for i, (name, n) in enumerate(self.extras, start=1):
            out[name] = t[b[i] : b[i + 1]].max(0).indices.cpu().numpy().astype(label_dtype(n), copy=False)
        if self.part_groups:
            out["part"] = self._parts(t, objects).cpu().numpy().astype(label_dtype(self.part_classes), copy=False)
        return out

    def _parts(self, t: torch.Tensor, objects: torch.Tensor) -> torch.Tensor:
        parts = torch.zeros_like(objects)
        first = 1 + len(self.extras)
        for g, group in enumerate(self.part_groups):
            where = objects == group.object_label
            if bool(where.any()):
                lo, hi = self._bounds[first + g], self._bounds[first + g + 1]
                local = t[lo:hi].max(0).indices
                table = torch.tensor(group.parts, dtype=parts.dtype, device=parts.device)
                parts = torch.where(where, table[local], parts)
        return parts
