"""Merged classes (`--class-map`): the values of finished blocks regrouped before they are read.

The map's output class g gets the summed probability of its source classes, so its logit is their
log-sum-exp: values [K, h, w] (logits or probabilities) → [G, h, w], exactly what the model's final,
merged values (all windows and views averaged, at the image's size) say of those groups; the label is the
most probable group. Ignored source classes form one more, last group (`Heads.ignore_label`: its pixels
get no class).
"""

from __future__ import annotations

import torch

from ..errors import UsageError
from .heads import Heads


class Grouping:
    """What the engine applies to a model's values for a class map: `table` gives each of the model's
    (single-head) classes its output class, or -1 (ignored: the pixels get `ignore_label`)."""

    def __init__(self, heads: Heads, table: tuple[int, ...], outputs: int, ignore_label: int) -> None:
        if heads.grouped or heads.image_level or heads.binary_threshold is not None:
            raise UsageError(
                "--class-map merges the classes of a single-head model",
                hint="a parser's or a binary model's classes cannot be merged; leave --class-map out",
            )
        if len(table) != heads.primary:
            raise UsageError(f"a class map for {len(table)} classes cannot merge a model's {heads.primary}")
        ignore = ignore_label if -1 in table else None
        self.heads = Heads(outputs + (ignore is not None), ignore_label=ignore)  # what the sinks read
        index = torch.tensor([t if t >= 0 else outputs for t in table])
        self.member = (torch.arange(self.heads.primary)[:, None] == index[None, :]).float()  # [G, K] 0 / 1

    def apply(self, values: torch.Tensor, kind: str) -> torch.Tensor:
        """Values [K, h, w] of `kind` ("logits" / "probs") → the groups' [G, h, w], of the same kind."""
        if self.member.device != values.device:  # once: the blocks of a run stay on one device
            self.member = self.member.to(values.device)
        member = self.member
        if kind == "probs":
            return torch.einsum("gk,khw->ghw", member, values.float())
        return merge_logits(values.float(), member)


def merge_logits(logits: torch.Tensor, member: torch.Tensor) -> torch.Tensor:
    """[K, h, w] → [G, h, w]: per group g, logsumexp of the channels where `member[g]` [G, K] is 1."""
    top = logits.amax(0, keepdim=True)  # [1, h, w]: shifts every group alike (exact, no overflow)
    sums = torch.einsum("gk,khw->ghw", member.to(logits.dtype), (logits - top).exp())
    return sums.clamp_min(torch.finfo(logits.dtype).tiny).log() + top
