"""Merged classes (`--class-map`): the values of finished blocks regrouped before they are read.

The map's output class g gets the summed probability of its source classes, so its logit is their
log-sum-exp: values [K, h, w] (logits or probabilities) → [G, h, w], exactly what the model's final,
merged values (all windows and views averaged, at the image's size) say of those groups; the label is the
most probable group. Ignored source classes form one more, last group (`Heads.ignore_label`: its pixels
get no class).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..errors import UsageError
from .heads import Heads

if TYPE_CHECKING:
    from ..loading.class_map import ClassMap


class Grouping:
    """What the engine applies to a model's values for `class_map` (a single-head model's)."""

    def __init__(self, heads: Heads, class_map: ClassMap) -> None:
        if heads.grouped or heads.image_level or heads.binary_threshold is not None:
            raise UsageError(
                "--class-map merges the classes of a single-head model",
                hint="a parser's or a binary model's classes cannot be merged; leave --class-map out",
            )
        if len(class_map.table) != heads.primary:
            raise UsageError(
                f"{class_map.source}: made for {len(class_map.table)} classes, the model has {heads.primary}"
            )
        outputs = len(class_map.class_set.classes)
        ignore = class_map.ignore_label if class_map.ignores else None
        self.heads = Heads(outputs + (ignore is not None), ignore_label=ignore)  # what the sinks read
        table = torch.tensor([t if t >= 0 else outputs for t in class_map.table])
        self.member = torch.arange(self.heads.primary)[:, None] == table[None, :]  # [G, K]

    def apply(self, values: torch.Tensor, kind: str) -> torch.Tensor:
        """Values [K, h, w] of `kind` ("logits" / "probs") → the groups' [G, h, w], of the same kind."""
        member = self.member.to(device=values.device, dtype=torch.float32)
        if kind == "probs":
            return torch.einsum("gk,khw->ghw", member, values.float())
        return merge_logits(values.float(), member)


def merge_logits(logits: torch.Tensor, member: torch.Tensor) -> torch.Tensor:
    """[K, h, w] → [G, h, w]: per group g, logsumexp of the channels where `member[g]` [G, K] is 1."""
    top = logits.amax(0, keepdim=True)  # [1, h, w]: shifts every group alike (exact, no overflow)
    sums = torch.einsum("gk,khw->ghw", member.to(logits.dtype), (logits - top).exp())
    return sums.clamp_min(torch.finfo(logits.dtype).tiny).log() + top
