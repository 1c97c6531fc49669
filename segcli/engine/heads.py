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
    # a binary head (mmseg `out_channels=1`): one logit z, p = sigmoid(z) of class 1, label 1 where p > threshold
    binary_threshold: float | None = None
    # a class map that ignores classes (`loading.class_map`): the primary's last channel is theirs, and its
    # pixels get this label (no class)
    ignore_label: int | None = None
    _bounds: tuple[int, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        sizes = [self.primary, *(n for _, n in self.extras), *(len(g.parts) for g in self.part_groups)]
        object.__setattr__(self, "_bounds", tuple(np.cumsum([0, *sizes]).tolist()))
        if self.binary_threshold is not None and (self.primary != 2 or len(sizes) != 1):
            raise ValueError("a binary head is one head of two classes")

    @classmethod
    def single(cls, num_classes: int) -> Heads:
        return cls(num_classes)

    @classmethod
    def binary(cls, threshold: float) -> Heads:
        return cls(2, binary_threshold=threshold)

    @property
    def classes(self) -> int:
        """The primary head's classes (its channels less an ignore channel)."""
        return self.primary - (self.ignore_label is not None)

    @property
    def channels(self) -> int:
        """The network's output channels (a binary head: its one logit)."""
        return 1 if self.binary_threshold is not None else self._bounds[-1]

    @property
    def prob_channels(self) -> int:
        """Channels of the probabilities (a binary head: background and foreground)."""
        return self._bounds[-1]

    def value_channels(self, probabilities: bool) -> int:
        """Channels of the values the engine carries: probabilities (a softmax per window) or logits."""
        return self.prob_channels if probabilities else self.channels

    @property
    def grouped(self) -> bool:
        return len(self._bounds) > 2

    @property
    def maps(self) -> tuple[str, ...]:
        """The label maps this layout gives besides `labels`."""
        return (*(name for name, _ in self.extras), *(("part",) if self.part_groups else ()))

    def softmax(self, t: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """Softmax within each group along `dim` (a binary head: [1 - sigmoid, sigmoid])."""
        if self.binary_threshold is not None:
            p = t.sigmoid()
            return torch.cat([1.0 - p, p], dim)
        if not self.grouped:
            return t.softmax(dim)
        b = self._bounds
        return torch.cat([t.narrow(dim, b[i], b[i + 1] - b[i]).softmax(dim) for i in range(len(b) - 1)], dim)

    def primary_probs(self, t: torch.Tensor, kind: str) -> torch.Tensor:
        """The primary head's probabilities [K, h, w] of values [C, h, w] that are `kind` "logits" or "probs"."""
        if kind == "probs":
            return t[: self.primary]
        return self.softmax(t[:1]) if self.binary_threshold is not None else t[: self.primary].softmax(0)

    def primary_logits(self, t: torch.Tensor, kind: str) -> torch.Tensor:
        """The primary head's logits of `kind` values; from probabilities, the log-probabilities (a binary head:
        the logit of its foreground probability), which keep the labels and the probabilities."""
        if self.binary_threshold is not None:
            return t[:1] if kind == "logits" else torch.logit(t[1:2], eps=1e-7)
        return t[: self.primary] if kind == "logits" else t[: self.primary].log()

    def labels(self, t: torch.Tensor) -> dict[str, np.ndarray]:
        """Label maps of values [C, h, w] (logits or probabilities: the argmax of each group is the same; a
        binary head's label is 1 where its probability exceeds the threshold)."""
        if self.binary_threshold is not None:
            p = t[0].sigmoid() if t.shape[0] == 1 else t[1]
            return {"labels": (p > self.binary_threshold).cpu().numpy().astype(np.uint8)}
        b = self._bounds
        objects = t[: self.primary].max(0).indices
        if self.ignore_label is not None:
            objects = objects.masked_fill(objects == self.primary - 1, self.ignore_label)
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
