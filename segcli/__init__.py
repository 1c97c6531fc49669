"""segcli: batch semantic segmentation (UPerNet, PSPNet) from the command line and Python."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__

__all__ = ["Parsing", "Segmenter", "__version__"]

if TYPE_CHECKING:
    from .api import Parsing, Segmenter


def __getattr__(name: str) -> Any:  # lazy: `segcli --help` must not pay for importing torch
    if name in ("Segmenter", "Parsing"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'segcli' has no attribute {name!r}")
