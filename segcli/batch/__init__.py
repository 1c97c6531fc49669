"""Batch prediction over a collection of images.

plan.py      what happens to each input (process / skip as finished / refuse), its output paths, the
             resume fingerprint — decided before any model runs
pipeline.py  decode ahead in threads, batch same-size images, write behind; records in input order
writer.py    one image's outputs, written atomically, the palette PNG (carrying the fingerprint) last
records.py   ImageRecord (per-image JSON, --jsonl) and RunSummary (summary.json)
runner.py    `run`: the three together over a `Segmenter`; `write_run_files`: legend.png, classes.json
"""

from .plan import Options, Task, fingerprint, output_paths, plan
from .records import ImageRecord, RunSummary, model_record
from .runner import run, write_run_files

__all__ = [
    "ImageRecord",
    "Options",
    "RunSummary",
    "Task",
    "fingerprint",
    "model_record",
    "output_paths",
    "plan",
    "run",
    "write_run_files",
]
