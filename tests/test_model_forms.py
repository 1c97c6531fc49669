"""Modules with an inference form and an export form compute the same function."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import randomize_

from segcli.model.heads.ppm import PyramidPooling
from segcli.model.layers import ConcatConvModule


@pytest.mark.parametrize("align_corners", [False, True])
def test_concat_conv_inference_form_equals_plain_concat(align_corners):
    torch.manual_seed(0)
    parts = [torch.randn(2, 8, 23, 31), torch.randn(2, 5, 12, 16), torch.randn(2, 4, 6, 8), torch.randn(2, 3, 1, 1)]
    fused = randomize_(ConcatConvModule(20, 6, 3, align_corners), seed=4).eval()
    plain = copy.deepcopy(fused)
    plain.to_export_form(dynamic=False)
    assert fused.fused and not plain.fused
    a, b = fused(parts), plain(parts)
    assert a.shape == (2, 6, 23, 31)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    # the plain form is conv(cat[upsampled parts]) written out here with torch alone
    ups = [
        torch.nn.functional.interpolate(p, (23, 31), mode="bilinear", align_corners=align_corners) for p in parts[1:]
    ]
    ref = torch.relu(
        plain.batch_norm(torch.nn.functional.conv2d(torch.cat([parts[0], *ups], 1), plain.conv.weight, padding=1))
    )
    torch.testing.assert_close(b, ref, rtol=0, atol=1e-5)


def test_pyramid_pooling_export_form_pools_the_same():
    ppm = randomize_(PyramidPooling(6, 4, (1, 2, 3, 6)), seed=5).eval()
    x = torch.randn(1, 6, 13, 17)  # not a multiple of 2, 3 or 6
    ref = [b(x) for b in ppm]
    exported = copy.deepcopy(ppm)
    exported.to_export_form(dynamic=True)
    for r, e in zip(ref, exported(x), strict=True):
        assert r.shape == e.shape
        torch.testing.assert_close(e, r, rtol=0, atol=1e-5)
