"""The unified perceptual parser's training loss, as its authors train it (CSAILVision/unifiedparsing,
`models/models.py`: `SegmentationModule.forward`'s training branch, `part_loss`, the decoder's log-softmax).

Labels come at the head's resolution (1/4 of the input: the authors' loader brings them down by
`segm_downsampling_rate` 4). Per task, where the batch has its labels (None: the task is absent and adds
nothing — the authors' `output_switch` per source):

  object    NLL of the log-softmax over objects, label 0 ("-") ignored, mean over the labelled pixels
  material  the same over materials, 0 ignored
  part      for each object that has parts (one softmax group each): NLL of the group's log-softmax at the
            pixels of that object, the target the part's index in the group (`local_parts`), summed over the
            images whose part labels are valid for it, over those images' pixels of the object (at least 1);
            the groups' losses added
  scene     NLL of the log-softmax of the scene logits (from the pooled PPM feature), -1 ignored
  total     object + 0.5 · part + 0.25 · scene + material (their `loss_scale`), over the tasks present
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..engine.heads import PartGroup
from ..model import Segmentor
from ..model.heads.upp import UPPHead

TASK_WEIGHTS = {"object": 1.0, "part": 0.5, "scene": 0.25, "material": 1.0}


@dataclass
class ParsingLabels:
    """A batch's labels; a task without labels is None. Maps are int64 [B, h, w] at the head's resolution."""

    object: torch.Tensor | None = None  # object labels, 0 = unlabelled ("-")
    part: torch.Tensor | None = None  # each pixel's part as its index in its object's group (`local_parts`)
    valid_part: torch.Tensor | None = None  # [B, groups] bool: image b's parts are labelled for group g
    material: torch.Tensor | None = None  # material labels, 0 = unlabelled
    scene: torch.Tensor | None = None  # [B] scene labels, -1 = unlabelled


def local_parts(
    objects: torch.Tensor, parts: torch.Tensor, groups: tuple[PartGroup, ...], classes: int
) -> torch.Tensor:
    """Global part labels [B, h, w] (0..classes-1) → each pixel's index in its object's part group (0, the
    group's "-", where the object has no such part or no parts)."""
    local = torch.zeros_like(parts)
    for group in groups:
        table = torch.zeros(classes, dtype=parts.dtype, device=parts.device)
        table[list(group.parts)] = torch.arange(len(group.parts), dtype=parts.dtype, device=parts.device)
        local = torch.where(objects == group.object_label, table[parts.clamp(0, classes - 1)], local)
    return local


def _part_loss(
    logp: torch.Tensor, part: torch.Tensor, objects: torch.Tensor, label: int, valid: torch.Tensor
) -> torch.Tensor:
    """The authors' `part_loss` for one group: log-probabilities [B, n, h, w]."""
    inside = objects == label  # [B, h, w]
    loss = F.nll_loss(logp, part * inside.long(), reduction="none") * inside.float()
    per_image = loss.flatten(1).sum(1)  # [B]
    pixels = (inside.flatten(1).sum(1) * valid).sum()
    return (per_image * valid.float()).sum() / torch.clamp(pixels, 1).float()


def parsing_losses(net: Segmentor, x: torch.Tensor, labels: ParsingLabels) -> dict[str, torch.Tensor]:
    """{task: loss, ..., "total": weighted sum} for normalised images x [B, 3, H, W]; only the heads of the
    tasks present run."""
    head = net.decode_head
    assert isinstance(head, UPPHead), "a unified perceptual parser"
    wanted = {k for k in ("object", "part", "material", "scene") if getattr(labels, k) is not None}
    out = head.tasks(net.features(x), wanted)
    terms: dict[str, torch.Tensor] = {}
    if labels.object is not None:
        terms["object"] = F.nll_loss(F.log_softmax(out["object"], 1), labels.object, ignore_index=0)
    if labels.material is not None:
        terms["material"] = F.nll_loss(F.log_softmax(out["material"], 1), labels.material, ignore_index=0)
    if labels.part is not None:
        assert labels.object is not None and labels.valid_part is not None, "parts need objects and valid_part"
        total, first = out["part"].new_zeros(()), 0
        for g, group in enumerate(net.config.heads.part_groups):  # one softmax group per object with parts
            logp = F.log_softmax(out["part"][:, first : first + len(group.parts)], 1)
            total = total + _part_loss(logp, labels.part, labels.object, group.object_label, labels.valid_part[:, g])
            first += len(group.parts)
        terms["part"] = total
    if labels.scene is not None:
        terms["scene"] = F.nll_loss(F.log_softmax(out["scene"], 1), labels.scene, ignore_index=-1)
    terms["total"] = sum((terms[k] * TASK_WEIGHTS[k] for k in list(terms)), x.new_zeros(()))
    return terms
