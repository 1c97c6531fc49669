"""mmsegmentation 1.2.2 as a test-only reference (see DEVELOPERS.md).

mmcv-lite has no compiled ops, and mmseg imports a few of them at module level (point_sample, PSAMask,
...). Before importing mmseg, `sys.modules["mmcv.ops"]` is replaced by a stub whose names exist but fail
when used; the pure-PyTorch parts segcli is compared with (EncoderDecoder's inference, SegTTAModel,
ResNetV1c, UPerHead, PSPHead, FCNHead, IoUMetric) never touch them.
"""

from __future__ import annotations

import sys
import types
import warnings

import pytest


def _stub_ops() -> types.ModuleType:
    ops = types.ModuleType("mmcv.ops")

    def missing(name: str):
        def fail(*args, **kwargs):
            raise RuntimeError(f"mmcv.ops.{name} is a stub: mmcv-lite has no compiled ops")

        return type(name, (), {"__init__": fail, "__call__": fail})

    def getattr_(name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return missing(name)

    ops.__getattr__ = getattr_  # type: ignore[attr-defined]
    return ops


def import_mmseg():
    """The `mmseg` package with its models registered, or skip the test when it is not installed."""
    pytest.importorskip("mmcv", reason="mmcv-lite is not installed (the [test] extra: the mmsegmentation reference)")
    sys.modules.setdefault("mmcv.ops", _stub_ops())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mmseg = pytest.importorskip(
            "mmseg", reason="mmsegmentation is not installed (the [test] extra: the reference implementation)"
        )
        from mmseg.utils import register_all_modules

        register_all_modules()
    return mmseg
