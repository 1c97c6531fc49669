"""Prediction over a collection of images: the workflow `segcli predict` runs, and its parts.

workflow.py  `predict`: check, discover, load, choose the backend, run here or on Ray, summary and run files
request.py   `Request` (what is asked), `Inference` (how the model runs), `Events` (what a run tells)
plan.py      what happens to each input (process / skip as finished / refuse), its output paths, the
             resume fingerprint — decided before any model runs
pipeline.py  decode ahead in threads, batch same-size images, write behind; records in input order
writer.py    one image's outputs, written atomically, the palette PNG (carrying the fingerprint) last
raster.py    a raster read through GDAL: segmented and written by rows
records.py   RunRecord (what made the outputs), ImageRecord (per-image JSON, --jsonl), RunSummary (summary.json)
runner.py    `run`: plan + pipeline over a `Segmenter` here; `write_run_files`: legend.png, classes.json
ray.py       the same on Ray Data actors (`segcli predict --ray`, `segcli.ray.segment`)

Names are imported on first use (the command line's start does not pay for torch); no module bears the
name of a function exported here.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .plan import Options, Task, fingerprint, output_paths
    from .records import ImageRecord, RunRecord, RunSummary, model_record
    from .request import Events, Inference, Request
    from .runner import run, write_run_files
    from .workflow import predict

_WHERE = {
    "Options": "plan",
    "Task": "plan",
    "fingerprint": "plan",
    "output_paths": "plan",
    "predict": "workflow",
    "ImageRecord": "records",
    "RunRecord": "records",
    "RunSummary": "records",
    "model_record": "records",
    "Events": "request",
    "Inference": "request",
    "Request": "request",
    "run": "runner",
    "write_run_files": "runner",
}
__all__ = [
    "Events",
    "ImageRecord",
    "Inference",
    "Options",
    "Request",
    "RunRecord",
    "RunSummary",
    "Task",
    "fingerprint",
    "model_record",
    "output_paths",
    "predict",
    "run",
    "write_run_files",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'segcli.batch' has no attribute {name!r}")
