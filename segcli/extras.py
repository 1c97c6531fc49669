"""Optional dependencies (the `[onnx]` extra, ...): imported only where used, with one error when missing."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from .errors import MissingExtraError

# what each extra installs, for hints that work however segcli was installed (a checkout is not on PyPI)
EXTRAS = {
    "onnx": "onnx onnxscript onnxruntime",
    "report": "jinja2 matplotlib",
    "ray": "'ray[data]'",
    "geo": "rasterio shapely pyogrio",
    "remote": "fsspec s3fs aiohttp",
    "openvino": "openvino onnx onnxscript onnxruntime",
}


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import `module`, or raise MissingExtraError saying what it is for and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        packages = EXTRAS.get(extra, module)
        raise MissingExtraError(
            f"{module} is not installed: {purpose}",
            hint=f"pip install {packages} (or, in a segcli checkout, pip install '.[{extra}]')",
        ) from None


def has_module(module: str) -> bool:
    """Whether `module` can be imported (found; not imported)."""
    return importlib.util.find_spec(module) is not None
