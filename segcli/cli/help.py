"""Plain help pages: `INPUT...` rather than Typer's `{INPUT}... <list[str]>`, and each command's exit codes.

Typer's `cls=` hook (public API) takes this command class; it only changes how arguments appear in the
usage line and the argument list, and drops the `<type>` labels an option without a metavar would get.
"""

from __future__ import annotations

import re
from typing import Any

from typer.core import TyperCommand

_TYPE_LABEL = re.compile(r" <[^<>]+>$")

STOPPED = "130 / 143 / 129 stopped by Ctrl-C / SIGTERM / SIGHUP"
EXIT_CODES = {
    "models": "Exit codes: 0 listed; 2 the registry (weights.toml or --registry FILE) is invalid.",
    "app": (
        "Exit codes: 0 all done; 1 some inputs failed (each named on stderr); 2 usage or configuration error "
        f"(bad flag, unknown model, unreadable or mismatched weights, download failed); {STOPPED}; 141 stdout "
        "closed under predict --jsonl."
    ),
    "download": "Exit codes: 0 every model ready; 2 a download, check or conversion failed (each named).",
    "predict": (
        "Exit codes: 0 every image done (or done before); 1 some inputs failed (each named on stderr); 2 usage or "
        "configuration error (flag, model, weights, output folder); 130 / 143 / 129 stopped by Ctrl-C / SIGTERM "
        "/ SIGHUP after the images in flight; 141 stdout closed under --jsonl."
    ),
    "evaluate": (
        "Exit codes: 0 every pair scored; 1 some ground truth had no prediction or a pair could not be read; "
        f"2 usage or configuration error; {STOPPED}."
    ),
    "train": (
        "Exit codes: 0 trained (RUN/model written); 1 the loss diverged or a rank was lost (the last checkpoint "
        "kept); 2 usage, data "
        "(the scan's problems), model or output-folder error; 130 / 143 / 129 stopped by Ctrl-C / SIGTERM / "
        "SIGHUP (a checkpoint saved: --resume continues)."
    ),
    "convert": "Exit codes: 0 converted; 2 unreadable file, wrong architecture, or bad flags.",
    "export": (
        "Exit codes: 0 exported (and verified); 1 the export differs from the model beyond --atol (file kept); "
        "2 usage error, missing extra (onnx, onnxruntime) or unreadable model."
    ),
    "quantize": (
        "Exit codes: 0 quantized and written; 1 the int8 model lost more than --min-agreement / --max-miou-drop "
        "allow (nothing written); 2 usage error, missing extra (onnx, onnxruntime) or unreadable model."
    ),
}
SHORT_HELP = {  # the command list's one line each (Click would cut the first sentence at 45 characters)
    "models": "List the registry's models and whether they are ready here.",
    "download": "Download (and check) model weights into the Hugging Face cache.",
    "predict": "Segment images, folders, lists and rasters: label PNGs and more.",
    "evaluate": "Score predictions against ground truth: mIoU, aAcc, per class.",
    "convert": "Convert an mmseg / CSAIL / semseg checkpoint to safetensors.",
    "export": "Export a model: ONNX, TorchScript, fp16 safetensors.",
    "quantize": "Quantize a model to int8 (ONNX), calibrated on your images.",
    "train": "Fine-tune a model on your own images and masks.",
}


def _argument_name(param: Any) -> str:
    name = param.metavar or param.name.upper()
    return name if param.nargs == 1 or name.endswith("...") else f"{name}..."


OPTIONAL_VALUES = {"--ray": "local"}  # options whose value may be left out: `--ray` alone means "local"


class SegcliCommand(TyperCommand):
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """`--ray` without a value (at the end, or before another option) is `--ray=local`."""
        out = []
        for i, arg in enumerate(args):
            bare = arg in OPTIONAL_VALUES and (i + 1 == len(args) or args[i + 1].startswith("-"))
            out.append(f"{arg}={OPTIONAL_VALUES[arg]}" if bare else arg)
        return super().parse_args(ctx, out)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                pieces.append(_argument_name(param) if param.required else f"[{_argument_name(param)}]")
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        args, opts = [], []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                args.append(
                    (
                        _argument_name(param),
                        (getattr(param, "help", None) or "") + ("  [required]" if param.required else ""),
                    )
                )
                continue
            record = param.get_help_record(ctx)
            if record is not None:
                opts.append((_TYPE_LABEL.sub("", record[0]), record[1]))
        for title, rows in (("Arguments", args), ("Options", opts)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)
