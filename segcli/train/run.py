"""A training run's folder: its checkpoints (written atomically, resumed exactly), its log, its model.

RUN/
  checkpoints/iter_<N>/   model.safetensors, optimizer.safetensors (every tensor of the optimizer's
                          state), state.json (iteration, the optimizer's other values, torch's RNG state
                          of each rank, the best validation so far, the run's settings); made in a
                          temporary folder and renamed into place (by rank 0 alone)
  checkpoints/latest      the name of the newest complete checkpoint (replaced atomically, after it)
  log.jsonl               one JSON line per logged iteration and per validation (and one where a
                          resumed run started: `resumed_at`, `checkpoint`)
  report.html, report/    the curves, per-class IoU and sample predictions (the [report] extra)
  model/                  the best model by validation mIoU (the last without validation), in segcli's
                          format: `segcli predict / evaluate / export -m RUN/model`

A kill -9 at any moment leaves `latest` naming a complete checkpoint (or none); `--resume` continues from
it with model, optimizer, schedule position and data position, so the loss curve is the uninterrupted one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..errors import UsageError
from ..fsutil import atomic_write_bytes, probe_writable, read_json_object, umask

KEEP = 2  # checkpoints kept (the newest and the one before it)


class RunFolder:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.checkpoints = self.root / "checkpoints"
        self.log = self.root / "log.jsonl"
        self.model = self.root / "model"

    def check(self, resume: bool) -> None:
        """Refuse a folder holding another run (without --resume), or one that cannot be written: before
        any training step."""
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"-o {self.root}: exists and is not a folder")
        started = (self.checkpoints / "latest").exists() or self.log.exists()
        if started and not resume:
            raise UsageError(
                f"-o {self.root}: holds a training run already",
                hint="add --resume to continue it, or give another -o",
            )
        try:
            probe_writable(self.root)
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"-o {self.root}: cannot write there ({e.strerror or e})") from None

    def check_space(self, model_bytes: int) -> None:
        """Refuse to start where the checkpoints cannot be written: `KEEP` + 1 checkpoints of the model and
        two optimizer moments each, and the model folder."""
        need = (KEEP + 1) * 3 * model_bytes + model_bytes
        free = shutil.disk_usage(self.root).free
        if free < need:
            raise UsageError(
                f"-o {self.root}: {free / 2**20:.0f} MiB free, the checkpoints need about {need / 2**20:.0f} MiB",
                hint="free some space or give another -o",
            )

    def latest(self) -> Path | None:
        try:
            name = (self.checkpoints / "latest").read_text().strip()
        except OSError:
            return None
        path = self.checkpoints / name
        return path if name.startswith("iter_") and (path / "state.json").is_file() else None

    def save(self, step: int, net: torch.nn.Module, opt: torch.optim.Optimizer, state: dict[str, Any]) -> Path:
        """Checkpoint after `step` iterations; returns its folder."""
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.checkpoints))
        try:
            save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, tmp / "model.safetensors")
            tensors, rest = _split_optimizer(opt.state_dict())
            save_file(tensors, tmp / "optimizer.safetensors")
            doc = {"step": step, "optimizer": rest, "torch_rng": torch.get_rng_state().tolist(), **state}
            (tmp / "state.json").write_text(json.dumps(doc))
            for f in tmp.iterdir():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            os.chmod(tmp, 0o777 & ~umask())
            final = self.checkpoints / f"iter_{step:08d}"
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        atomic_write_bytes(self.checkpoints / "latest", final.name.encode())
        for old in sorted(self.checkpoints.glob("iter_*"))[:-KEEP]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def load(self, path: Path, net: torch.nn.Module, opt: torch.optim.Optimizer, rank: int = 0) -> dict[str, Any]:
        """Restore model and optimizer from checkpoint `path`, and rank `rank`'s random state; its
        state.json (strict loading: every key)."""
        net.load_state_dict(load_file(path / "model.safetensors"), strict=True)
        doc = read_json_object(path / "state.json", 64 << 20)
        opt.load_state_dict(_join_optimizer(load_file(path / "optimizer.safetensors"), doc["optimizer"]))
        rngs = doc.get("rank_rng")
        rng = rngs[rank] if isinstance(rngs, list) and rank < len(rngs) else doc["torch_rng"]
        torch.set_rng_state(torch.tensor(rng, dtype=torch.uint8))
        return doc

    def append_log(self, record: dict[str, Any]) -> None:
        with open(self.log, "a") as f:
            f.write(json.dumps(record, allow_nan=False) + "\n")
            f.flush()

    def records(self, resumes: bool = False) -> list[dict[str, Any]]:
        """The log's records of iterations and validations (a line cut short by a kill is left out); with
        `resumes`, the lines that say where a resumed run started (`resumed_at`, `checkpoint`) instead."""
        return self.entries()[1 if resumes else 0]

    def entries(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(records, resumes) of one read of the log (see `records`)."""
        if not self.log.exists():
            return [], []
        out = []
        for line in self.log.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        out = [r for r in out if isinstance(r, dict)]
        return [r for r in out if isinstance(r.get("iter"), int)], [
            r for r in out if isinstance(r.get("resumed_at"), int)
        ]

    def truncate_log(self, step: int) -> None:
        """On resume: the lines of iterations after the checkpoint are dropped (they are done again)."""
        if not self.log.exists():
            return
        keep = [line for line in self.log.read_text().splitlines() if _line_step(line) <= step]
        atomic_write_bytes(self.log, "".join(line + "\n" for line in keep).encode())


def _line_step(line: str) -> int:
    try:
        return int(json.loads(line).get("iter", 0))
    except (ValueError, AttributeError, TypeError):
        return 1 << 62  # a torn last line: dropped


def _split_optimizer(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer state dict → (its tensors by "state.<param>.<name>", everything else as JSON)."""
    tensors: dict[str, torch.Tensor] = {}
    values: dict[str, dict[str, Any]] = {}
    for index, entries in sd["state"].items():
        for name, v in entries.items():
            if isinstance(v, torch.Tensor):
                tensors[f"state.{index}.{name}"] = v.detach().contiguous()
            else:
                values.setdefault(str(index), {})[name] = v
    return tensors, {"values": values, "param_groups": sd["param_groups"]}


def _join_optimizer(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, t in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = t
    for index, entries in rest["values"].items():
        state.setdefault(int(index), {}).update(entries)
    return {"state": state, "param_groups": rest["param_groups"]}
