"""What the hostile-input tests share: a writable copy of the tiny model (photos come from helpers.photo)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture()
def model(tiny_convnext_dir, tmp_path) -> Path:
    """A writable copy of the tiny model directory."""
    return Path(shutil.copytree(tiny_convnext_dir, tmp_path / "model"))
