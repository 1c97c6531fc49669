"""The networks, pure PyTorch.

backbones/    ConvNeXt, Swin, ResNet: [B, 3, H, W] → four feature maps
heads/        UPerNet (uper), PSPNet (psp), the auxiliary FCN (fcn), pyramid pooling (ppm), the parser (upp)
layers.py     ConvModule, ConcatConvModule (the convolution over an upsampled concatenation), ExportForm
segmentor.py  normalise → backbone → decode head → logits at the input size
fold.py       BatchNorm folded into the convolution before it
"""

from .segmentor import Normalization, Segmentor, SegmentorConfig, network_size

__all__ = ["Normalization", "Segmentor", "SegmentorConfig", "network_size"]
