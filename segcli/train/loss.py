"""The training loss the papers and mmsegmentation use (mmseg 1.2.2 `BaseDecodeHead.loss_by_feat`).

Each head's logits (at its own resolution: 1/4 or 1/8) are resized bilinearly to the label size with the
model's `align_corners`, then pixel-wise cross-entropy with the ignore index, averaged over *all* label
pixels (`mean_over="all"`: mmseg's default `avg_non_ignore=False`, ignored pixels count as zero loss) or over
the labelled ones (`"labelled"`: transformers' `UperNetForSemanticSegmentation` and the PSPNet author's
`train.py`, torch's own mean). `"csail"` is the UPerNet authors' `train.py`: the logits stay at their
resolution and the labels come down to it instead (PIL's nearest: the centre pixel of each cell,
`segm_downsampling_rate`), NLL of the log-softmax over the labelled pixels. The total is the decode term
plus `aux_weight` (0.4: PSPNet's deep supervision on stage 3, CSAIL's `deep_sup_scale`, the FCN auxiliary
head of mmseg's and transformers' UPerNet) times the auxiliary term, when the model has an auxiliary head.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..errors import UsageError
from ..model import Segmentor
from ..model.layers import resize

IGNORE_INDEX = 255
AUX_WEIGHT = 0.4
MEANS = ("all", "labelled", "csail")


def check_trainable(net: Segmentor) -> None:
    """Refuse the networks this loss does not describe (UsageError naming what to use)."""
    if net.config.threshold is not None:
        raise UsageError("training a binary (one-logit) head is not supported yet", hint="use two classes")


Share = Callable[[torch.Tensor], torch.Tensor]
"""A batch's denominator → the denominator this process divides by: the identity in one process; in a
distributed run the sum over every rank's batch divided by the number of ranks, so that DDP's mean of the
ranks' gradients is the gradient of the global batch's loss (`train.distributed.share`)."""


def _ce(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int,
    weight: torch.Tensor | None,
    align: bool,
    mean: str,
    share: Share | None = None,
) -> torch.Tensor:
    """Cross-entropy of logits [B, K, h, w] resized to labels [B, H, W], averaged as `mean` says: the sum of
    the pixels' (weighted) losses over the (weighted) count of the pixels averaged over, that count `share`d
    across processes."""
    if mean == "csail":  # labels [B, H, W] → [B, h, w]: PIL's nearest picks the centre, torch's nearest-exact
        labels = F.interpolate(labels[:, None].float(), size=logits.shape[-2:], mode="nearest-exact")[:, 0].long()
        logits = logits.float()
    else:
        logits = resize(logits, (labels.shape[-2], labels.shape[-1]), align).float()
    total = F.cross_entropy(logits, labels, weight=weight, ignore_index=ignore_index, reduction="sum")
    labelled = labels != ignore_index
    if mean in ("labelled", "csail"):  # torch's mean: over the labelled pixels' weights
        count = labelled.sum() if weight is None else weight[labels[labelled]].sum()
    elif weight is None:
        count = torch.tensor(labels.numel(), device=labels.device)
    else:  # mmseg with class weights: the sum of the label pixels' weights (an ignored pixel weighs 1, as it
        # counts 1 without weights; mmseg itself cannot index its weights by the ignore value)
        ones = torch.ones((), device=labels.device)
        count = torch.where(labelled, weight[labels.clamp(0, weight.numel() - 1)], ones).sum()
    count = count.detach().float()
    if share is not None:
        count = share(count)
    return total / count.clamp_min(1e-12)  # a crop with nothing labelled: 0, not torch's 0 / 0


def losses(
    net: Segmentor,
    x: torch.Tensor,
    labels: torch.Tensor,
    *,
    ignore_index: int = IGNORE_INDEX,
    aux_weight: float = AUX_WEIGHT,
    class_weight: torch.Tensor | None = None,
    mean_over: str = "all",
    share: Share | None = None,
) -> dict[str, torch.Tensor]:
    """{"decode": …, "aux": … (with an auxiliary head), "total": decode + aux_weight · aux} for normalised
    images x [B, 3, H, W] and labels [B, H, W] (int64, `ignore_index` where unlabelled); `share`: see `Share`."""
    if mean_over not in MEANS:
        raise ValueError(f"mean_over={mean_over!r}: one of {MEANS}")
    features = net.features(x)
    out = net.decode_head(features)
    if isinstance(out, tuple):  # image-level outputs: refused by check_trainable
        raise UsageError("this model's head has image-level outputs: it cannot be trained here")
    align = net.align_corners
    terms = {"decode": _ce(out, labels, ignore_index, class_weight, align, mean_over, share)}
    total = terms["decode"]
    if net.auxiliary_head is not None and aux_weight:
        aux = net.auxiliary_head(features)
        terms["aux"] = _ce(aux, labels, ignore_index, class_weight, align, mean_over, share)
        total = total + aux_weight * terms["aux"]
    terms["total"] = total
    return terms


def convention(default_preset: str) -> str:
    """The loss of the model's own source, known by its protocol preset: transformers' and the PSPNet
    author's (mean over labelled pixels) for `hf` and `semseg` models, the UPerNet authors' for `csail`
    ones, mmseg's (all pixels) for the others."""
    return {"hf": "labelled", "semseg": "labelled", "csail": "csail"}.get(default_preset, "all")


def dropout_for(default_preset: str, arch: str) -> float:
    """The dropout before the classifiers in the model's own source: mmseg's decode heads 0.1
    (`dropout_ratio`, its configs' value for PSPNet, UPerNet and the FCN auxiliary head), the PSPNet
    author's 0.1, CSAIL's PPM-deepsup 0.1 (both branches) and its UPerNet (and unified parser) none; transformers' UperNet none."""
    if default_preset == "hf" or arch == "upp" or (default_preset == "csail" and arch != "psp"):
        return 0.0
    return 0.1


def add_dropout(net: Segmentor, p: float) -> list[torch.utils.hooks.RemovableHandle]:
    """mmseg's `nn.Dropout2d(p)` before each classifier, active in training mode only (forward pre-hooks:
    nothing in the network or its state dict changes; inference never runs it)."""
    handles = []
    for head in (net.decode_head, net.auxiliary_head):
        classifier = getattr(head, "classifier", None) if head is not None else None
        if p > 0 and isinstance(classifier, torch.nn.Module):
            hook = _dropout_hook(p)
            handles.append(classifier.register_forward_pre_hook(hook))
    return handles


Hook = Callable[[torch.nn.Module, tuple[torch.Tensor, ...]], tuple[torch.Tensor, ...]]


def _dropout_hook(p: float) -> Hook:
    def hook(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return (F.dropout2d(args[0], p, module.training), *args[1:])

    return hook
