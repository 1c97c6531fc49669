"""The versions that made an output, in one place: provenance in JSON records, cache keys, `made by` lines."""

from __future__ import annotations

import importlib.metadata

from ._version import __version__


def made_by() -> str:
    """`segcli X.Y.Z`: the `converted_by` / `exported_by` value of the files segcli writes."""
    return f"segcli {__version__}"


def package(name: str) -> str | None:
    """An installed distribution's version, read from its metadata without importing it (None: not installed)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def software() -> dict[str, str]:
    """The versions that made an output (provenance; not part of the resume fingerprint)."""
    import torch

    return {"segcli": __version__, "torch": torch.__version__}
