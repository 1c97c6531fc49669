"""Every backbone × head through one tester (as smp's BaseModelTester, timm's tiny registered models).

Each subclass names one tiny network; the base class checks, for all of them alike: the backbone's four
levels (channels, strides), logits at the input size (also for sizes that are no multiple of 32 or of a
window), the decode head's own resolution, the auxiliary head, a save / strict load round trip in segcli's
model directory (every key and shape accounted for: a missing, an unexpected and a mis-shaped tensor are
each refused, naming the key), and the export form computing the same function.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import randomize_
from safetensors.torch import load_file, save_file

from segcli import Segmenter
from segcli.backends.export import prepare, save_native
from segcli.errors import CheckpointError
from segcli.loading.classes import ClassSet, derived_palette, head_sets, known_set, parsing_head
from segcli.loading.formats.arch import network_from_tables
from segcli.loading.info import ModelInfo
from segcli.model import Segmentor, SegmentorConfig
from segcli.model.backbones import ConvNeXtConfig, ResNetConfig, SwinConfig
from segcli.model.heads.fcn import FCNHeadConfig
from segcli.model.heads.psp import PSPHeadConfig
from segcli.model.heads.uper import UPerHeadConfig

K = 7  # classes of the tiny networks


class NetworkTester:
    """One network configuration; subclasses set `config` (and `strides` for a dilated backbone)."""

    config: SegmentorConfig
    strides: tuple[int, ...] = (4, 8, 16, 32)  # of the backbone's four levels
    head_stride = 4  # the decode head's output, relative to the input
    sizes = ((64, 64), (70, 45))  # the second: no multiple of 32, 7 or the pooling scales
    rounding = staticmethod(math.ceil)  # of a level's size at a stride (ConvNeXt's patchify stem floors)

    def network(self, seed: int = 0) -> Segmentor:
        return randomize_(Segmentor(self.config), seed=seed).eval()

    def info(self) -> ModelInfo:
        classes = ClassSet("custom", tuple(f"c{i}" for i in range(self.config.num_classes)), derived_palette(K))
        return ModelInfo(type(self).__name__, self.config, classes)

    def logits(self, net: Segmentor, x: torch.Tensor, **kw: bool) -> torch.Tensor:
        with torch.inference_mode():
            out = net(x, **kw)
        return out[0] if isinstance(out, tuple) else out

    def test_backbone_levels_have_their_channels_and_strides(self):
        net = self.network()
        for h, w in self.sizes:
            feats = net.features(torch.randn(1, 3, h, w))
            shapes = [tuple(f.shape[1:]) for f in feats]
            expected = [
                (c, self.rounding(h / s), self.rounding(w / s))
                for c, s in zip(net.backbone.out_channels, self.strides, strict=True)
            ]
            assert shapes == expected

    def test_logits_at_the_input_size_and_the_heads_resolution(self):
        net = self.network()
        for h, w in self.sizes:
            x = torch.randn(2, 3, h, w)
            full = self.logits(net, x)
            assert full.shape == (2, net.heads.channels, h, w) and bool(torch.isfinite(full).all())
            low = self.logits(net, x, upsample=False)
            assert low.shape[-2:] == (self.rounding(h / self.head_stride), self.rounding(w / self.head_stride))

    def test_auxiliary_head_reads_its_level(self):
        net = self.network()
        if net.auxiliary_head is None:
            with pytest.raises(ValueError, match="no auxiliary head"):
                net.forward_aux(torch.randn(1, 3, 64, 64))
            return
        with torch.inference_mode():
            assert net.forward_aux(torch.randn(1, 3, 70, 45)).shape == (1, self.config.num_classes, 70, 45)

    def test_saved_and_loaded_strictly_gives_the_same_logits(self, tmp_path):
        net = self.network(seed=3)
        folder = save_native(net, self.info(), tmp_path / "m", dtype=torch.float32)
        seg = Segmenter.from_pretrained(folder)
        x = torch.randn(1, 3, *self.sizes[1])
        torch.testing.assert_close(self.logits(seg.network, x), self.logits(net, x), rtol=0, atol=1e-5)

    def test_every_key_and_shape_is_accounted_for(self, tmp_path):
        folder = save_native(self.network(), self.info(), tmp_path / "m", dtype=torch.float32)
        weights = folder / "model.safetensors"
        full = load_file(weights)
        key = sorted(k for k in full if k.startswith("decode_head."))[0]
        cases = {
            "missing": {k: v for k, v in full.items() if k != key},
            "unexpected": {**full, "decode_head.extra.weight": torch.zeros(3)},
            "conflicts": {**full, key: torch.zeros(*full[key].shape[:-1], full[key].shape[-1] + 1)},
        }
        for kind, tensors in cases.items():
            save_file(tensors, weights)
            with pytest.raises(CheckpointError, match=rf"1 {'shape/dtype conflicts' if kind == 'conflicts' else kind}"):
                Segmenter.from_pretrained(folder)

    def test_export_form_computes_the_same_function(self):
        net = self.network(seed=5)
        x = torch.randn(1, 3, *self.sizes[1])
        for dynamic in (True, False):
            torch.testing.assert_close(self.logits(prepare(net, dynamic), x), self.logits(net, x), rtol=0, atol=2e-5)


def _uper(widths: tuple[int, ...], **kw: object) -> UPerHeadConfig:
    return UPerHeadConfig(widths, K, channels=16, **kw)


class TestConvNeXtUPerNet(NetworkTester):
    rounding = staticmethod(math.floor)
    config = SegmentorConfig(
        ConvNeXtConfig((1, 1, 2, 1), (8, 16, 24, 32)), _uper((8, 16, 24, 32)), FCNHeadConfig(24, K, channels=8)
    )


class TestSwinUPerNet(NetworkTester):
    swin = SwinConfig(embed_dim=8, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4), window_size=3)
    config = SegmentorConfig(swin, _uper(swin.out_channels), FCNHeadConfig(32, K, channels=8))


class TestResNetUPerNet(NetworkTester):  # mmseg's UPerNet-R50 and the authors' (PPM after upsampling)
    config = SegmentorConfig(
        ResNetConfig(50, blocks=(1, 1, 1, 1)), _uper((256, 512, 1024, 2048), ppm_upsample_first=True), None
    )


class TestDilatedResNetPSPNet(NetworkTester):  # output stride 8, auxiliary head on stage 3
    strides = (4, 8, 8, 8)
    head_stride = 8
    config = SegmentorConfig(
        ResNetConfig(50, (1, 2, 1, 1), (1, 1, 2, 4), blocks=(1, 1, 1, 1)),
        PSPHeadConfig(2048, K, channels=16, align_corners=True),
        FCNHeadConfig(1024, K, channels=8),
    )


class TestDilatedResNet18PSPNet(TestDilatedResNetPSPNet):  # basic blocks
    config = SegmentorConfig(
        ResNetConfig(18, (1, 2, 1, 1), (1, 1, 2, 4), blocks=(1, 1, 1, 1)),
        PSPHeadConfig(512, K, channels=16),
        FCNHeadConfig(256, K, channels=8),
    )


class TestUnifiedPerceptualParser(NetworkTester):  # objects, parts, materials, scene; precise RoI pooling
    config = network_from_tables(
        {"type": "resnet", "depth": 18, "blocks": [1, 1, 1, 1]},
        {"type": "upp", "channels": 16, **parsing_head("unifiedparsing")},
        336,
        "tiny upp",
    )

    def info(self) -> ModelInfo:
        return ModelInfo("upp", self.config, known_set("unifiedparsing"), head_sets=head_sets("unifiedparsing"))
