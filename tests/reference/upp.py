"""The unified perceptual parser of CSAILVision/unifiedparsing (MIT), transcribed for the parity tests.

* `Decoder` is `models/models.py` `UPerNet` (fc_dim 2048, fpn_dim 512, use_softmax=True: the inference
  branch), line for line, with the synchronized BatchNorm of `mit_semseg` (the same vendored module, so the
  state dict carries the same `_tmp_running_mean` / `_tmp_running_var` / `_running_iter` buffers).
* `prroi_pool2d` replaces the CUDA-only `PrRoIPool2D` by a port of its kernel
  (`lib/nn/prroi_pool/src/prroi_pooling_gpu_impl.cu`, `PrRoIPoolingForward` and
  `PrRoIPoolingMatCalculation`): the same loops over unit cells and the same four-corner integrals,
  vectorised over batch and channels only. It shares no code with segcli's separable closed form.
* `test_py` is `test.py`'s `test()` with `dataset.py`'s `TestDataset.__getitem__` for one image: BGR, the
  Caffe means, `int()`-truncated sizes rounded up to a multiple of 8, `cv2.resize` (INTER_LINEAR) unless
  another resize is given, probabilities divided by the number of sizes and summed, argmax per head.
The encoder is mit_semseg's `Resnet(resnet50())`, the same file as unifiedparsing's `models/resnet.py`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from mit_semseg.lib.nn import SynchronizedBatchNorm2d
from torch import nn

BatchNorm2d = SynchronizedBatchNorm2d
MEAN_BGR = (102.9801, 115.9465, 122.7717)


# ------------------------------------------------------------------ PrRoIPool2D, ported from the CUDA kernel


def _get(data: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """PrRoIPoolingGetData: data[..., h, w], 0 outside the map."""
    height, width = data.shape[-2:]
    if h < 0 or w < 0 or h >= height or w >= width:
        return torch.zeros(data.shape[:-2], dtype=data.dtype)
    return data[..., h, w]


def _mat(data, s_h, s_w, e_h, e_w, y0, x0, y1, x1) -> torch.Tensor:
    """PrRoIPoolingMatCalculation: the integral of the bilinear surface over [x0, x1] × [y0, y1] inside
    the unit cell [s_w, e_w] × [s_h, e_h], as the sum of its four corners' contributions."""
    out = 0
    alpha, beta = x0 - s_w, y0 - s_h
    lim_alpha, lim_beta = x1 - s_w, y1 - s_h
    tmp = (lim_alpha - 0.5 * lim_alpha**2 - alpha + 0.5 * alpha**2) * (
        lim_beta - 0.5 * lim_beta**2 - beta + 0.5 * beta**2
    )
    out = out + _get(data, s_h, s_w) * tmp
    alpha, lim_alpha = e_w - x1, e_w - x0
    tmp = (lim_alpha - 0.5 * lim_alpha**2 - alpha + 0.5 * alpha**2) * (
        lim_beta - 0.5 * lim_beta**2 - beta + 0.5 * beta**2
    )
    out = out + _get(data, s_h, e_w) * tmp
    alpha, beta = x0 - s_w, e_h - y1
    lim_alpha, lim_beta = x1 - s_w, e_h - y0
    tmp = (lim_alpha - 0.5 * lim_alpha**2 - alpha + 0.5 * alpha**2) * (
        lim_beta - 0.5 * lim_beta**2 - beta + 0.5 * beta**2
    )
    out = out + _get(data, e_h, s_w) * tmp
    alpha, lim_alpha = e_w - x1, e_w - x0
    tmp = (lim_alpha - 0.5 * lim_alpha**2 - alpha + 0.5 * alpha**2) * (
        lim_beta - 0.5 * lim_beta**2 - beta + 0.5 * beta**2
    )
    return out + _get(data, e_h, e_w) * tmp


def prroi_pool2d(features: torch.Tensor, rois: torch.Tensor, pooled_h: int, pooled_w: int, scale: float):
    """PrRoIPoolingForward for rois [R, 5] = (batch index, x0, y0, x1, y1) → [R, C, pooled_h, pooled_w]."""
    out = torch.zeros(rois.shape[0], features.shape[1], pooled_h, pooled_w, dtype=features.dtype)
    for r, roi in enumerate(rois.tolist()):
        data = features[int(roi[0])]
        start_w, start_h, end_w, end_h = (v * scale for v in roi[1:])
        bin_h = max(end_h - start_h, 0.0) / pooled_h
        bin_w = max(end_w - start_w, 0.0) / pooled_w
        win_size = max(0.0, bin_w * bin_h)
        if win_size == 0:
            continue
        for ph in range(pooled_h):
            for pw in range(pooled_w):
                win_start_w, win_start_h = start_w + bin_w * pw, start_h + bin_h * ph
                win_end_w, win_end_h = win_start_w + bin_w, win_start_h + bin_h
                total = 0
                for w_iter in range(math.floor(win_start_w), math.ceil(win_end_w)):
                    for h_iter in range(math.floor(win_start_h), math.ceil(win_end_h)):
                        total = total + _mat(
                            data,
                            h_iter,
                            w_iter,
                            h_iter + 1,
                            w_iter + 1,
                            max(win_start_h, float(h_iter)),
                            max(win_start_w, float(w_iter)),
                            min(win_end_h, float(h_iter) + 1.0),
                            min(win_end_w, float(w_iter + 1.0)),
                        )
                out[r, :, ph, pw] = total / win_size
    return out


class PrRoIPool2D(nn.Module):
    def __init__(self, pooled_height, pooled_width, spatial_scale):
        super().__init__()
        self.pooled_height = int(pooled_height)
        self.pooled_width = int(pooled_width)
        self.spatial_scale = float(spatial_scale)

    def forward(self, features, rois):
        return prroi_pool2d(features, rois, self.pooled_height, self.pooled_width, self.spatial_scale)


# ------------------------------------------------------------------ models/models.py UPerNet


def conv3x3(in_planes, out_planes, stride=1, has_bias=False):
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=has_bias)


def conv3x3_bn_relu(in_planes, out_planes, stride=1):
    return nn.Sequential(conv3x3(in_planes, out_planes, stride), BatchNorm2d(out_planes), nn.ReLU(inplace=True))


class Decoder(nn.Module):
    """UPerNet(nr_classes, fc_dim=2048, use_softmax=True, fpn_inplanes, fpn_dim=512); `object_part` is the hierarchy:
    [(object label, [global part labels]), ...] in object_part_hierarchy.csv order."""

    def __init__(
        self,
        nr_classes,
        object_part,
        fc_dim=2048,
        pool_scales=(1, 2, 3, 6),
        fpn_inplanes=(256, 512, 1024, 2048),
        fpn_dim=512,
        ppm_dim=512,  # 512 in their code; a parameter here for the small test network
    ):
        super().__init__()
        self.object_part = object_part
        self.ppm_pooling = nn.ModuleList(PrRoIPool2D(scale, scale, 1.0) for scale in pool_scales)
        self.ppm_conv = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(fc_dim, ppm_dim, kernel_size=1, bias=False), BatchNorm2d(ppm_dim), nn.ReLU(inplace=True)
            )
            for _ in pool_scales
        )
        self.ppm_last_conv = conv3x3_bn_relu(fc_dim + len(pool_scales) * ppm_dim, fpn_dim, 1)
        self.fpn_in = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, fpn_dim, kernel_size=1, bias=False), BatchNorm2d(fpn_dim), nn.ReLU(inplace=True))
            for c in fpn_inplanes[:-1]
        )
        self.fpn_out = nn.ModuleList(nn.Sequential(conv3x3_bn_relu(fpn_dim, fpn_dim, 1)) for _ in fpn_inplanes[:-1])
        self.conv_fusion = conv3x3_bn_relu(len(fpn_inplanes) * fpn_dim, fpn_dim, 1)
        n = nr_classes
        self.scene_head = nn.Sequential(
            conv3x3_bn_relu(fpn_dim, fpn_dim, 1),
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(fpn_dim, n["scene"], kernel_size=1, bias=True),
        )
        self.object_head = nn.Sequential(conv3x3_bn_relu(fpn_dim, fpn_dim, 1), nn.Conv2d(fpn_dim, n["object"], 1))
        self.part_head = nn.Sequential(conv3x3_bn_relu(fpn_dim, fpn_dim, 1), nn.Conv2d(fpn_dim, n["part"], 1))
        self.material_head = nn.Sequential(conv3x3_bn_relu(fpn_dim, fpn_dim, 1), nn.Conv2d(fpn_dim, n["material"], 1))

    def logits(self, conv_out):
        """The four heads before the use_softmax branch: scene [N, S, 1, 1]; others at 1/4."""
        conv5 = conv_out[-1]
        input_size = conv5.size()
        roi = torch.cat(
            [torch.Tensor([i, 0, 0, input_size[3], input_size[2]]).view(1, -1) for i in range(input_size[0])]
        ).type_as(conv5)
        ppm_out = [conv5]
        for pool_scale, pool_conv in zip(self.ppm_pooling, self.ppm_conv, strict=True):
            pooled = pool_scale(conv5, roi.detach())
            up = F.interpolate(pooled, (input_size[2], input_size[3]), mode="bilinear", align_corners=False)
            ppm_out.append(pool_conv(up))
        f = self.ppm_last_conv(torch.cat(ppm_out, 1))
        out = {"scene": self.scene_head(f)}
        fpn_feature_list = [f]
        for i in reversed(range(len(conv_out) - 1)):
            conv_x = self.fpn_in[i](conv_out[i])
            f = F.interpolate(f, size=conv_x.size()[2:], mode="bilinear", align_corners=False)
            f = conv_x + f
            fpn_feature_list.append(self.fpn_out[i](f))
        fpn_feature_list.reverse()  # [P2 - P5]
        out["material"] = self.material_head(fpn_feature_list[0])
        output_size = fpn_feature_list[0].size()[2:]
        fusion_list = [fpn_feature_list[0]] + [
            F.interpolate(p, output_size, mode="bilinear", align_corners=False) for p in fpn_feature_list[1:]
        ]
        x = self.conv_fusion(torch.cat(fusion_list, 1))
        out["object"] = self.object_head(x)
        out["part"] = self.part_head(x)
        return out

    def forward(self, conv_out, seg_size):
        """The use_softmax=True branch: probabilities at seg_size; parts as one tensor per group."""
        out = self.logits(conv_out)
        out["scene"] = F.softmax(out["scene"].squeeze(3).squeeze(2), dim=1)
        for k in ("object", "material"):
            x = F.interpolate(out[k], size=seg_size, mode="bilinear", align_corners=False)
            out[k] = F.softmax(x, dim=1)
        x = F.interpolate(out["part"], size=seg_size, mode="bilinear", align_corners=False)
        part_pred_list, head = [], 0
        for _, parts in self.object_part:
            n_part = len(parts)
            _x = F.interpolate(x[:, head : head + n_part], size=seg_size, mode="bilinear", align_corners=False)
            part_pred_list.append(F.softmax(_x, dim=1))
            head += n_part
        out["part"] = part_pred_list
        return out


# ------------------------------------------------------------------ test.py


def _round2nearest_multiple(x, p):
    return ((x - 1) // p + 1) * p


def _cv2_resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    return cv2.resize(img.copy(), size)


def test_py(encoder, decoder, image_rgb: np.ndarray, sizes=(300, 400, 500, 600), resize=_cv2_resize):
    """test.py for one RGB uint8 image: averaged probabilities (object, material, parts per group, scene)
    and the argmax maps (`pred_ms` before visualize_result)."""
    img = image_rgb[:, :, ::-1]  # dataset.py: "BGR to RGB!!!" (it makes BGR)
    ori_height, ori_width, _ = img.shape
    inputs = []
    for this_short_size in sizes:
        scale = min(this_short_size / float(min(ori_height, ori_width)), 1000 / float(max(ori_height, ori_width)))
        target_height, target_width = int(ori_height * scale), int(ori_width * scale)
        target_height = _round2nearest_multiple(target_height, 8)
        target_width = _round2nearest_multiple(target_width, 8)
        img_resized = resize(img, (target_width, target_height)).astype(np.float32).transpose((2, 0, 1))
        x = torch.from_numpy(img_resized.copy()) - torch.tensor(MEAN_BGR)[:, None, None]
        inputs.append(x[None])
    seg_size = (ori_height, ori_width)
    k = decoder.object_head[1].out_channels, decoder.material_head[1].out_channels
    probs = {"object": torch.zeros(1, k[0], *seg_size), "material": torch.zeros(1, k[1], *seg_size)}
    probs["part"] = [torch.zeros(1, len(parts), *seg_size) for _, parts in decoder.object_part]
    probs["scene"] = torch.zeros(1, decoder.scene_head[2].out_channels)
    with torch.no_grad():
        for x in inputs:
            pred = decoder(encoder(x, return_feature_maps=True), seg_size)
            for key in ("scene", "object", "material"):
                probs[key] = probs[key] + pred[key] / len(sizes)
            for i in range(len(decoder.object_part)):
                probs["part"][i] += pred["part"][i] / len(sizes)
    labels = {key: probs[key].argmax(1)[0].numpy() for key in ("object", "material")}
    labels["part"] = [p.argmax(1)[0].numpy() for p in probs["part"]]
    return probs, labels


def global_parts(object_map: np.ndarray, local_parts: list[np.ndarray], object_part) -> np.ndarray:
    """The issue's single part map from test.py's per-group argmaxes: at a pixel of an object with parts,
    that object's part list indexed by its group's local argmax; 0 elsewhere (eval_multipro.py's masking)."""
    out = np.zeros_like(object_map)
    for (obj, parts), local in zip(object_part, local_parts, strict=True):
        where = object_map == obj
        out[where] = np.asarray(parts)[local[where]]
    return out
