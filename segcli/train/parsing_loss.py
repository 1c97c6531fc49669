"""The unified perceptual parser's training loss, as its authors train it (CSAILVision/unifiedparsing,
`models/models.py`: `SegmentationModule.forward`'s training branch, `part_loss`, the decoder's log-softmax).

Labels come at the head's resolution (1/4 of the input: the authors' loader brings them down by
`segm_downsampling_rate` 4). Per task, where the batch has its labels (None: the task is absent and adds
nothing — the authors' `output_switch` per source):

  object    NLL of the log-softmax over objects, label 0 ("-") ignored, mean over the labelled pixels (a
            batch without any: 0, where torch's mean is NaN)
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
from torch import nn

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
    inside: torch.Tensor | None = None  # the object labels that locate the parts when objects are no task


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


def _nll(logp: torch.Tensor, target: torch.Tensor, ignore: int) -> torch.Tensor:
    """torch's `nll_loss(..., ignore_index=ignore)` mean, 0 (with the graph kept) where nothing is labelled."""
    labelled = target != ignore
    if bool(labelled.any()):
        return F.nll_loss(logp, target, ignore_index=ignore)
    return logp.sum() * 0.0


def parsing_losses(net: Segmentor, x: torch.Tensor, labels: ParsingLabels) -> dict[str, torch.Tensor]:
    """{task: loss, ..., "total": weighted sum} for normalised images x [B, 3, H, W]; only the heads of the
    tasks present run."""
    head = net.decode_head
    assert isinstance(head, UPPHead), "a unified perceptual parser"
    wanted = {k for k in ("object", "part", "material", "scene") if getattr(labels, k) is not None}
    out = head.tasks(net.features(x), wanted)
    terms: dict[str, torch.Tensor] = {}
    if labels.object is not None:
        terms["object"] = _nll(F.log_softmax(out["object"], 1), labels.object, 0)
    if labels.material is not None:
        terms["material"] = _nll(F.log_softmax(out["material"], 1), labels.material, 0)
    if labels.part is not None:
        objects = labels.object if labels.object is not None else labels.inside
        assert objects is not None and labels.valid_part is not None, "parts need objects and valid_part"
        total, first = out["part"].new_zeros(()), 0
        for g, group in enumerate(net.config.heads.part_groups):  # one softmax group per object with parts
            logp = F.log_softmax(out["part"][:, first : first + len(group.parts)], 1)
            total = total + _part_loss(logp, labels.part, objects, group.object_label, labels.valid_part[:, g])
            first += len(group.parts)
        terms["part"] = total
    if labels.scene is not None:
        terms["scene"] = _nll(F.log_softmax(out["scene"], 1), labels.scene, -1)
    terms["total"] = sum((terms[k] * TASK_WEIGHTS[k] for k in list(terms)), x.new_zeros(()))
    return terms


class ParsingObjective(nn.Module):
    """The parser and its loss as one module (what DistributedDataParallel wraps, as `train.step.Objective`):
    the tasks a batch has labels for, of those the run trains (`--tasks`), each task's loss."""

    def __init__(self, net: Segmentor, tasks: frozenset[str]) -> None:
        super().__init__()
        self.net, self.wanted = net, tasks

    def forward(self, images: torch.Tensor, labels: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """uint8 images [B, 3, H, W], labels as `train.parsing_data.sample` gives them (batched)."""
        device = self.net.device
        x = self.net.normalize(images.to(device, torch.float32))
        have = {k: v.to(device) for k, v in labels.items() if k in self.wanted or k in ("valid_part", "object")}
        part = have.get("part")
        picked = ParsingLabels(
            object=have.get("object") if "object" in self.wanted else None,
            part=part,
            valid_part=have.get("valid_part") if part is not None else None,
            material=have.get("material"),
            scene=have.get("scene"),
            inside=have.get("object") if part is not None else None,
        )
        return parsing_losses(self.net, x, picked)
