"""Network definitions: backbones/, heads/, and the segmentor that wires them."""

from .segmentor import Normalization, Segmentor, SegmentorConfig, network_size

__all__ = ["Normalization", "Segmentor", "SegmentorConfig", "network_size"]
