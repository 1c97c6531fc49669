"""Which backend runs a loaded network: the rules (`unsupported`), building one (`build`), and `select`,
with `auto`'s measured choice (`calibrate`: a few interleaved calls per candidate at the preset's view
size, once per machine, architecture and view size, then cached). `auto` folds BatchNorm into the
convolutions first (`model.fold`); a run with nothing cached measures only when that costs at most a
tenth of the run (`budget`; through the API without a run size: whenever allowed), else runs torch. Only
views of one fixed size qualify for compile (whole images at their own sizes would recompile per size)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import torch

from ..engine import SegModel
from ..engine.memory import VALUE_COPIES, check_pass
from ..engine.presets import Params
from ..errors import MissingExtraError, UsageError
from ..loading.info import ModelInfo
from ..model import Segmentor
from . import budget, calibrate
from .base import BackendError

BACKENDS = ("auto", "torch", "compile", "onnxruntime", "openvino")
CANDIDATES = ("compile", "onnxruntime", "openvino")  # what `auto` measures against torch
MEASURE = ("auto", "again", "never")  # --backend-measure
PHOTO = (512, 683)  # the view a keep-ratio whole-image preset is measured at (a 3:4 photo, short side 512)


@dataclass(frozen=True)
class Choice:
    """The backend a model runs on and why (recorded in summary.json, printed by the CLI)."""

    requested: str
    backend: str
    reason: str
    seconds: dict[str, float] | None = None  # the calibration's medians per call, when one decided

    def to_json(self) -> dict[str, object]:
        return {"requested": self.requested, "backend": self.backend, "reason": self.reason, "seconds": self.seconds}


def view_shape(params: Params) -> tuple[int, int] | None:
    """The one (H, W) every forward of `params` has (windows of `slide`, a fixed resize), or None."""
    if len(params.scales) != 1 or params.scales[0] != 1.0:
        return None
    if params.mode == "slide" and params.crop is not None:
        return params.crop  # windows at the image's edges too (an image smaller than the crop: another size)
    if params.resize.kind == "fixed":
        return (params.resize.height, params.resize.width)
    return None


def call_batch(params: Params | None) -> int:
    """How many views one forward of `params` takes (windows per call, mirrored ones too; one image's views —
    `--batch-size` can add same-size images, which compile then compiles again)."""
    if params is None:
        return 1
    return (params.tile_batch if params.mode == "slide" else 1) * (2 if params.window_flip else 1)


def _measured_shape(params: Params) -> tuple[int, int]:
    if shape := view_shape(params):
        return shape
    r = params.resize
    if r.kind == "keep":
        return (r.short, min(r.long, round(r.short * 4 / 3)))
    return PHOTO


def unsupported(name: str, net: Segmentor, params: Params | None, auto: bool) -> str | None:
    """Why backend `name` cannot run `net` with `params` here (None: it can)."""
    fixed = view_shape(params) if params is not None else None
    if name == "compile":
        if net.device.type not in ("cpu", "cuda"):
            return f"torch.compile does not support {net.device.type} here"
        if auto and fixed is None:
            return "views of varying sizes would recompile per size"
        return None
    if net.device.type != "cpu" or net.dtype != torch.float32:
        return f"{name} runs float32 on the CPU only"
    if net.heads.grouped or net.heads.image_level:
        return "exports carry one head, not a parser's four heads"
    if params is not None and params.resize_once:
        return "this preset resizes logits once from the model's resolution; an export gives them at the input size"
    from .openvino import require_openvino
    from .ort import dynamic_ok, require_ort

    if fixed is None and not dynamic_ok(net):
        return "Swin exports need one fixed view size (slide windows or an HxW resize)"
    try:
        (require_openvino if name == "openvino" else require_ort)()
    except MissingExtraError as e:
        return f"{e.message} ({e.hint})"
    return None


def build(
    name: str, net: Segmentor, info: ModelInfo, params: Params | None, log: Callable[[str], None] | None
) -> SegModel:
    """`net` run by backend `name` (compiled / exported and ready)."""
    if name == "torch":
        return net
    fixed = view_shape(params) if params is not None else None
    if name == "compile":
        from .compiled import CompiledModel

        model = CompiledModel(net)
        if log is not None:
            log("compiling the model (torch.compile; once per view size) ...")
        upsample = params is None or not params.resize_once
        model.warm(fixed or (64, 64), call_batch(params), upsample)
        return model
    if name == "openvino":
        from . import openvino

        return openvino.load(net, info, fixed, log)  # the onnxruntime backend's export, compiled by OpenVINO
    from .ort import load

    return load(net, info, fixed, log)  # one view size: a static export at it; else dynamic (not Swin)


def check(requested: str) -> str:
    """`requested` in lower case, if it names a backend (else a UsageError listing them)."""
    name = str(requested).lower()
    if name not in BACKENDS:
        raise UsageError(f"unknown backend {requested!r}", hint=f"one of {', '.join(BACKENDS)}")
    return name


def select(
    net: SegModel,
    info: ModelInfo,
    params: Params | None,
    requested: str,
    *,
    allow_calibration: bool = True,
    remeasure: bool = False,
    log: Callable[[str], None] | None = None,
    run_images: int | None = None,
) -> tuple[SegModel, Choice]:
    """The model to run and the choice made: `requested` is one of `BACKENDS`; `params` the views it will
    run (None: any). `auto` calibrates when nothing is cached and `allow_calibration`, or now when
    `remeasure` (the cached choice replaced); given the `run_images` it serves, only when that pays off
    (`budget`: at most a tenth of the run)."""
    requested = check(requested)
    if not isinstance(net, Segmentor):
        runs = "torchscript" if getattr(net, "model_format", "onnx") == "torchscript" else "onnxruntime"
        why = f"an exported {'TorchScript' if runs == 'torchscript' else 'ONNX'} file runs in {runs}"
        if requested not in ("auto", runs):  # e.g. $SEGCLI_BACKEND: a preference, not an error here
            why += f" (backend {requested} applies to PyTorch models)"
        return net, Choice(requested, runs, why)
    if requested == "torch":
        return net, Choice(requested, "torch", "asked for")
    if requested != "auto":
        if reason := unsupported(requested, net, params, auto=False):
            raise UsageError(f"--backend {requested}: {reason}", hint="use --backend auto or torch")
        if requested == "compile":
            from ..model.fold import fold_batchnorm

            fold_batchnorm(net)  # the graph auto measures for compile (and one pass less per BatchNorm)
        try:
            return build(requested, net, info, params, log), Choice(requested, requested, "asked for")
        except BackendError as e:
            raise UsageError(f"--backend {requested}: {e.message}", hint=e.hint) from None
    return _auto(net, info, params, allow_calibration or remeasure, remeasure, log, None if remeasure else run_images)


def _measure(
    net: Segmentor,
    info: ModelInfo,
    params: Params | None,
    eligible: list[str],
    built: dict[str, SegModel],
    notes: dict[str, str],
    call: tuple[tuple[int, int], int, bool],
    log: Callable[[str], None] | None,
) -> dict[str, Any]:
    """Prepare each eligible backend and time them all on one view (`call`: shape, batch, upsample), saying
    each step and how long it took; the cache entry."""
    say = log or (lambda message: None)
    (h, w), batch, upsample = call
    started = time.monotonic()
    say(f"auto backend: measuring {', '.join(['torch', *eligible])} at {h}x{w} (once for this model here) ...")
    for i, n in enumerate(eligible, start=1):
        t = time.monotonic()
        say(f"auto backend: preparing {n} ({i} of {len(eligible)}) ...")
        try:
            built[n] = build(n, net, info, params, log)
            say(f"auto backend: {n} ready in {time.monotonic() - t:.0f} s")
        except BackendError as e:
            notes[n] = e.message
            say(f"auto backend: {n} left out after {time.monotonic() - t:.0f} s ({e.message})")
    say(f"auto backend: timing {', '.join(built)} ({calibrate.ROUNDS} rounds) ...")
    x = torch.randn((batch, 3, h, w), generator=torch.Generator().manual_seed(0)).to(net.device, net.dtype)
    seconds = calibrate.measure(built, x, upsample, log=say)
    say(f"auto backend: measured in {time.monotonic() - started:.0f} s")
    about = {"model": info.name, "view": f"{h}x{w}", "device": str(net.device), "dtype": str(net.dtype)}
    when = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"seconds": seconds, "choice": calibrate.pick(seconds), "notes": notes, **about, "measured_at": when}


def _worth(
    net: Segmentor, params: Params | None, eligible: list[str], call: tuple[tuple[int, int], int, bool], images: int
) -> budget.Budget:
    """Whether measuring pays off for a run of `images`: one torch call timed at the measured view."""
    (h, w), batch, upsample = call
    x = torch.randn((batch, 3, h, w), generator=torch.Generator().manual_seed(0)).to(net.device, net.dtype)
    t_call = calibrate.measure({"torch": net}, x, upsample, rounds=1)["torch"]
    calls = images * (params.views if params is not None else 1)  # at least one call per view
    return budget.estimate(net, eligible, t_call, calls, dynamic=params is None or view_shape(params) is None)


def check_measure(when: str) -> str:
    """`--backend-measure`: one of `MEASURE` (else a UsageError)."""
    if when not in MEASURE:
        raise UsageError(f"--backend-measure {when!r}: give one of {', '.join(MEASURE)}")
    return when


def _auto(
    net: Segmentor,
    info: ModelInfo,
    params: Params | None,
    allow: bool,
    remeasure: bool,
    log: Callable[[str], None] | None,
    run_images: int | None = None,
) -> tuple[SegModel, Choice]:
    from ..model.fold import fold_batchnorm

    fold_batchnorm(net)  # in place: this network only runs from now on (benchmarks/eager_gap.py measures it)
    notes = {n: why for n in CANDIDATES if (why := unsupported(n, net, params, auto=True))}
    eligible = [n for n in CANDIDATES if n not in notes]
    said = "; ".join(f"{n}: {why}" for n, why in notes.items())
    if not eligible:
        return net, Choice("auto", "torch", f"the only backend for this model and preset here ({said})")
    shape = _measured_shape(params) if params is not None else PHOTO
    batch = call_batch(params)
    upsample = params is None or not params.resize_once
    calls = {"upsample": upsample, "eligible": sorted(eligible)}
    k = calibrate.key(net.config, net.dtype, net.device, shape, batch, calls)
    entry = None if remeasure else calibrate.lookup(k)
    if entry is not None and entry["choice"] not in ("torch", *eligible):
        entry = None  # measured when another backend qualified
    built: dict[str, SegModel] = {"torch": net}
    if entry is None:
        if not allow:
            why = (
                "not measured on this machine for this model and view size yet "
                "(a run large enough to pay for it measures once)"
            )
            return net, Choice("auto", "torch", f"{why}; {said}" if said else why)
        check_pass(net.device, net.heads.channels, shape, VALUE_COPIES * batch, "measuring one forward pass")
        if run_images is not None:
            worth = _worth(net, params, eligible, (shape, batch, upsample), run_images)
            if not worth.pays:
                why = f"not measured: {worth.say()}; a larger run measures once"
                return net, Choice("auto", "torch", f"{why}; {said}" if said else why)
            if log is not None:
                log(f"auto backend: {worth.say()}")
        entry = _measure(net, info, params, eligible, built, notes, (shape, batch, upsample), log)
        calibrate.store(k, entry)
    choice, seconds = entry["choice"], entry["seconds"]
    figures = ", ".join(f"{n} {s:.3g} s" for n, s in sorted(seconds.items(), key=lambda kv: kv[1]))
    reason = f"fastest measured here per {shape[0]}x{shape[1]} view: {figures}"
    failed = {n: why for n, why in (entry.get("notes") or {}).items() if n not in notes}  # failed when measured
    if said := "; ".join(f"{n}: {why}" for n, why in {**notes, **failed}.items()):
        reason += f" ({said})"
    if choice not in built:
        try:
            built[choice] = build(choice, net, info, params, log)
        except BackendError as e:
            return net, Choice("auto", "torch", f"{choice} was fastest but fails now: {e.message}", seconds)
    return built[choice], Choice("auto", choice, reason, seconds)
