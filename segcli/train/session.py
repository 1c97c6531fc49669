"""One training session: the starting model made trainable for the run's classes, the loop, validation
with segcli's own metrics and the model's protocol, checkpoints, and the model written for `predict`."""

from __future__ import annotations

import shutil
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from .._version import __version__
from ..api import Segmenter
from ..engine.presets import Resize
from ..errors import SegcliError, UsageError
from ..evaluation.metrics import confusion, scores
from ..extras import has_module
from ..io.images import load_image
from ..loading.classes import ClassSet
from ..loading.formats import native
from ..loading.info import ModelInfo
from ..model import Segmentor, SegmentorConfig
from ..report import training
from ..report.html import require_report
from . import distributed
from .augment import Pipeline
from .classes import read_classes, remap
from .data import MaskRule, read_mask
from .distributed import World
from .loss import add_dropout, check_trainable, convention, dropout_for
from .options import Events, Options, Summary
from .parsing_data import ParsingSamples, Record
from .parsing_eval import validate as validate_parsing
from .parsing_loss import ParsingObjective
from .recipes import Recipe, optimizer, recipe_for, set_lr
from .run import RunFolder
from .step import Objective, Samples, Slice, amp_dtype, max_rss_mb, step_once, timing


class Session:
    def __init__(
        self, net: Segmentor, info: ModelInfo, opts: Options, ev: Events, kept: dict[str, int], world: World
    ) -> None:
        self.net, self.info, self.opts, self.ev, self.kept, self.world = net, info, opts, ev, kept, world
        self.recipe: Recipe = recipe_for(net, opts.recipe, opts.lr)
        self.loss_mean = convention(info.default_preset)
        self.amp: str | None = None  # what autocast computes in, once the run starts
        self.dropout = opts.dropout if opts.dropout is not None else dropout_for(info.default_preset, net.config.arch)
        if not 0 <= self.dropout < 1:
            raise UsageError(f"dropout {self.dropout}: give 0 ≤ p < 1")
        add_dropout(net, self.dropout)
        self.report = _want_report(opts.report)
        self.samples: list[dict[str, Any]] = []  # the report's, from the latest validation
        self.parsing = net.config.arch == "upp"  # a unified perceptual parser: its tasks, their losses
        self.tasks = frozenset(opts.tasks or PARSER_TASKS) if self.parsing else frozenset()
        if self.parsing:
            freeze_heads(net, self.tasks)

    @property
    def classes(self) -> ClassSet:
        return self.info.class_set

    @property
    def num_classes(self) -> int:
        return len(self.classes.classes)

    @classmethod
    def start(cls, model: str, opts: Options, ev: Events, world: World | None = None) -> Session:
        """The starting model (any source segcli loads), with classifiers for `--classes` when they differ."""
        seg = Segmenter.from_pretrained(model, device=opts.device, backend="torch")
        net, info = seg.network, seg.info
        if not isinstance(net, Segmentor) or info.network is None:
            raise UsageError(f"-m {model}: an exported model cannot be trained", hint="start from its weights")
        check_trainable(net)
        _check_tasks(net, opts)
        kept: dict[str, int] = {}
        if opts.classes is not None:
            wanted = read_classes(opts.classes)
            if wanted.classes != info.class_set.classes:
                net, kept = _with_classes(net, info.network, info.class_set, wanted, opts.seed)
                info = replace(info, network=net.config, class_set=wanted)
                ev.say(f"classes: {len(wanted.classes)} from {opts.classes} ({len(kept)} keep their trained rows)")
        return cls(net, info, opts, ev, kept, world or World())

    def run(self, folder: RunFolder, train: list[Any], val: list[Any], rule: MaskRule) -> Summary:
        """Train on `train` (`Pair`s; a parser's: `Record`s) and validate on `val`, in `folder`."""
        o, net, world = self.opts, self.net, self.world
        assert o.iters is not None  # resolved by fit (--iters, --epochs or the default)
        total = o.iters
        if o.sync_bn and world.distributed:
            net = self.net = distributed.sync_batchnorm(net, net.device)  # type: ignore[assignment]
        opt = optimizer(net, self.recipe)
        state, start = self._resume(folder, opt)
        amp = amp_dtype(o.amp, net.device)
        self.amp = str(amp).removeprefix("torch.") if amp is not None else "float32"
        if world.main:
            folder.check_space(sum(t.numel() * t.element_size() for t in net.state_dict().values()))
        scaler = torch.amp.GradScaler(net.device.type) if amp == torch.float16 else None
        val_every = o.val_every or max(1, total // 5)
        ckpt_every = o.checkpoint_every or val_every
        ignore = 0 if self.parsing else o.ignore_index  # a parser's maps: 0 is "-"
        pipe = Pipeline(o.crop, ignore=ignore, photometric=o.photometric, base=self._scale())
        part = Slice(start, total, o.batch, world.rank, world.size, o.accumulate)
        heads = net.config.heads
        samples = (
            ParsingSamples(train, heads, pipe, o.seed, part)
            if self.parsing
            else Samples(train, rule, pipe, o.seed, part)
        )
        loader = torch.utils.data.DataLoader(samples, batch_size=o.batch, num_workers=o.workers, shuffle=False)
        objective: torch.nn.Module = (
            ParsingObjective(net, self.tasks)
            if self.parsing
            else Objective(net, self.loss_mean, self._class_weight(), distributed.share(world))
        )
        if world.distributed:  # the ranks start from rank 0's weights (the same checkpoint anyway)
            objective = DistributedDataParallel(  # a parser's batch runs its source's heads only
                objective, device_ids=[net.device] if net.device.type == "cuda" else None,
                find_unused_parameters=self.parsing,
            )  # fmt: skip
            # a depthwise weight's gradient [C, 1, k, k] has another stride along its size-1 axis: harmless
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        self.ev.say(f"training {total} iterations of {self._global_batch()} ({self.recipe.name} recipe, amp {amp})")
        net.train()
        step, t0, stopped = start, time.perf_counter(), False
        micro: list[Any] = []
        for batch in loader:
            micro.append(batch)
            if len(micro) < o.accumulate:
                continue
            lr = set_lr(opt, self.recipe, step, total)
            terms = self._step(objective, opt, micro, amp, scaler)
            micro, step = [], step + 1
            if step % o.log_every == 0 or step == total:
                rate = timing((step - start) * o.batch * o.accumulate * world.size, t0)
                eta = round((total - step) * o.batch * o.accumulate * world.size / max(rate, 1e-9))
                record = {"iter": step, "lr": lr, **terms, "images_per_s": rate, "eta_s": eta}
                self._log(folder, {**record, "max_rss_mb": round(max_rss_mb(), 1)})
            if step % val_every == 0 or step == total:
                self._validate(folder, val, rule, step, state)
            stop = distributed.anyone(world, self.ev.should_stop())  # every rank stops after the same step
            if step % ckpt_every == 0 or step == total or stop:
                self._save(folder, step, opt, state)
            if stop and step < total:
                stopped = True
                break
        if not val and not stopped and world.main:
            self._write_model(folder.model, step)
        self._report(folder)
        return Summary(step, state["best_miou"], folder.model, stopped)

    def _step(
        self, objective: torch.nn.Module, opt: torch.optim.Optimizer, micro: list[Any], amp: Any, scaler: Any
    ) -> dict[str, float]:
        try:
            return step_once(objective, opt, micro, amp, scaler, self.world)
        except ValueError as e:  # torch's BatchNorm on a [1, C, 1, 1] map: the pyramid pooling's 1×1 bin
            if "more than 1 value per channel" not in str(e):
                raise
            several = (
                " (with several ranks: --sync-bn, which normalises over all of them)" if self.world.distributed else ""
            )
            raise UsageError(
                f"--batch {self.opts.batch}: the BatchNorm after the pyramid pooling's 1×1 bin sees one value "
                "per channel with one image per step",
                hint=f"use --batch 2 or more{several}",
            ) from None

    def _resume(self, folder: RunFolder, opt: torch.optim.Optimizer) -> tuple[dict[str, Any], int]:
        """(the run's state, the iteration to start at): from the latest checkpoint with --resume (every
        rank reads the same one; rank 0 drops the log lines after it), else fresh."""
        latest = folder.latest() if self.opts.resume else None
        if latest is None:
            if self.opts.resume and self.world.main:  # no checkpoint yet: from the start, the log too
                folder.truncate_log(0)
            return {"best_miou": None}, 0
        state = folder.load(latest, self.net, opt, self.world.rank)
        was = state.get("settings", {})
        now = self._settings()
        if (was.get("batch"), was.get("ranks", 1), was.get("accumulate", 1)) != (
            now["batch"],
            now["ranks"],
            now["accumulate"],
        ):
            raise UsageError(
                f"{latest}: trained with {was.get('ranks', 1)} rank(s) × --batch {was.get('batch')} × "
                f"--accumulate {was.get('accumulate', 1)}; this run has {self._global_batch()}",
                hint="resume with the same ranks, --batch and --accumulate (the data order depends on them)",
            )
        start = int(state["step"])
        if self.world.main:
            folder.truncate_log(start)
            folder.append_log({"resumed_at": start, "checkpoint": latest.name})  # not an iteration's record
        self.ev.say(f"resuming at iteration {start} of {self.opts.iters} ({latest.name})")
        return state, start

    def _global_batch(self) -> str:
        o, w = self.opts, self.world
        ranks = f"{w.size} ranks × " if w.distributed else ""
        acc = f" × {o.accumulate} micro-batches" if o.accumulate > 1 else ""
        return f"{ranks}{o.batch}{acc} × {o.crop[0]}x{o.crop[1]}"

    def _class_weight(self) -> torch.Tensor | None:
        w = self.opts.class_weights
        if w is None:
            return None
        if len(w) != self.num_classes or not all(0 <= v < float("inf") for v in w) or not any(w):
            raise UsageError(
                f"--class-weights: {len(w)} weight(s) for {self.num_classes} classes",
                hint="give one non-negative weight per class, in the classes' order, e.g. 1,1,4",
            )
        return torch.tensor(w, dtype=torch.float32, device=self.net.device)

    def _save(self, folder: RunFolder, step: int, opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        """A checkpoint (rank 0 writes it, with every rank's random state); when the disk refuses it (full,
        read-only now), the run stops with the last good one."""
        rngs = distributed.gather(self.world, torch.get_rng_state().tolist())
        if not self.world.main:
            return
        try:
            about = {"best_miou": state["best_miou"], "settings": self._settings(), "rank_rng": rngs}
            folder.save(step, self.net, opt, about)
        except OSError as e:
            good = folder.latest()
            raise SegcliError(
                f"{folder.checkpoints}: cannot write the checkpoint of iteration {step} ({e.strerror or e})",
                hint=f"the last good one is kept ({good.name if good else 'none yet'}); free space, then --resume",
            ) from None

    def _scale(self) -> tuple[int, int]:
        """The base scale (long, short) of the random resize: the model's own test scale — its input size
        for the `hf` preset, mmseg's keep-ratio (4 × crop, crop) otherwise — so that training sees objects
        at the sizes the protocol shows them."""
        if self.info.default_preset == "hf":
            h, w = self.info.input_size
            return max(h, w), min(h, w)
        resize = Resize.parse(self.info.protocol.resize or "none")
        if resize.kind in ("keep", "multiple"):  # the parser's 300:1000/8: the authors' 300…600 short side
            return resize.long, resize.short
        c = self.info.protocol.crop_size
        return 4 * c, c

    def _log(self, folder: RunFolder, record: dict[str, Any]) -> None:
        if not self.world.main:
            return
        folder.append_log(record)
        self.ev.logged(record)

    def _validate(self, folder: RunFolder, val: list[Any], rule: MaskRule, step: int, state: dict[str, Any]) -> None:
        """Rank 0 validates (the others wait at their next step); the best model so far written."""
        if not val or not self.world.main:
            return
        if self.parsing:
            return self._validate_parsing(folder, val, step, state)
        self.net.eval()
        seg = Segmenter(self.net, self.info)
        k = self.num_classes
        cm = np.zeros((k, k), dtype=np.int64)
        samples: list[training.Sample] = []
        with torch.inference_mode():
            for pair in val:
                image = load_image(pair.image)
                pred = seg.predict(image).astype(np.int64)
                gt = read_mask(pair.mask, rule)
                one = confusion(gt, pred, k, ignore_index=rule.ignore, where=str(pair.mask))
                cm += one
                if self.report and len(samples) < training.SAMPLES:
                    samples.append(training.Sample(pair.image.name, image, gt, pred, float(scores(one)["mIoU"])))
        self.net.train()
        result = scores(cm)
        miou = float(result["mIoU"])
        best = state["best_miou"]
        if best is None or miou > best:
            state["best_miou"] = miou
            self._write_model(folder.model, step)
        per_class = [None if np.isnan(v) else float(v) for v in result["per_class"]["IoU"]]
        record = {"iter": step, "val_mIoU": miou, "val_aAcc": float(result["aAcc"]), "best": state["best_miou"]}
        self._log(folder, {**record, "val_IoU": per_class})
        if self.report:
            self.samples = training.save_samples(folder.root, samples, self.classes, rule.ignore)
            self._report(folder)

    def _validate_parsing(self, folder: RunFolder, val: list[Record], step: int, state: dict[str, Any]) -> None:
        self.net.eval()
        scored = validate_parsing(Segmenter(self.net, self.info), val, self.tasks)
        self.net.train()
        if scored is None:
            return
        if state["best_miou"] is None or scored["val_mIoU"] > state["best_miou"]:
            state["best_miou"] = scored["val_mIoU"]
            self._write_model(folder.model, step)
        self._log(folder, {"iter": step, **scored, "best": state["best_miou"]})
        self._report(folder)

    def _report(self, folder: RunFolder) -> None:
        """RUN/report.html as the log says now; a report that cannot be written is said, not fatal."""
        if not self.report or not self.world.main:
            return
        about = {"model": self.info.name, **self._settings()}
        try:
            training.write(folder.root, folder.records(), self.classes, about, self.samples)
        except OSError as e:
            self.ev.say(f"{folder.root / 'report.html'}: not written ({e.strerror or e}); training goes on")

    def _settings(self) -> dict[str, Any]:
        o = self.opts
        return {
            "iters": o.iters, "batch": o.batch, "crop": list(o.crop), "recipe": self.recipe.name,
            "lr": self.recipe.lr, "seed": o.seed, "reduce_zero_label": o.reduce_zero_label,
            "ignore_index": o.ignore_index, "amp": self.amp, "loss_mean": self.loss_mean,
            "dropout": self.dropout, "class_weights": list(o.class_weights) if o.class_weights else None,
            "ranks": self.world.size, "accumulate": o.accumulate, "sync_bn": o.sync_bn, "segcli": __version__,
            **({"tasks": sorted(self.tasks)} if self.parsing else {}),
        }  # fmt: skip

    def _write_model(self, where: Path, step: int) -> None:
        """The network as it is now, in segcli's format (its classes, palette and protocol; how it was trained)."""
        where.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".model-", dir=where.parent))
        try:
            tensors = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
            source = {"trained_from": self.info.name, "iterations": step, "training": self._settings()}
            cfg = self.info.network
            assert cfg is not None  # a trainable model is described by its config
            native.write(tmp, tensors, cfg, self.classes, self.info.default_preset, self.info.protocol, source,
                         input_size=self.info.input_size, head_sets=self.info.head_sets or None)  # fmt: skip
            old = where.with_name(where.name + ".old")
            if where.exists():
                shutil.rmtree(old, ignore_errors=True)
                where.rename(old)
            tmp.rename(where)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


PARSER_TASKS = ("object", "part", "material", "scene")
HEAD_OF = {"object": "object_head", "part": "part_head", "material": "material_head", "scene": "scene_head"}


def _check_tasks(net: Segmentor, opts: Options) -> None:
    if net.config.arch != "upp":
        if opts.tasks:
            raise UsageError("--tasks: this model has one task", hint="--tasks is for unified perceptual parsers")
        return
    if opts.classes is not None:
        raise UsageError("--classes: a unified perceptual parser keeps its class lists", hint="leave --classes out")
    unknown = sorted(set(opts.tasks or ()) - set(PARSER_TASKS))
    if unknown or (opts.tasks is not None and not opts.tasks):
        raise UsageError(f"--tasks {','.join(opts.tasks or ())}: give some of {', '.join(PARSER_TASKS)}")


def freeze_heads(net: Segmentor, tasks: frozenset[str]) -> None:
    """The heads of the tasks not trained keep their weights: no gradients, no optimizer state, and (not
    run) no BatchNorm statistics updates."""
    for task, name in HEAD_OF.items():
        if task not in tasks:
            getattr(net.decode_head, name).requires_grad_(False)


def _want_report(wanted: bool | None) -> bool:
    """Whether RUN/report.html is written: asked (the [report] extra then required now), or by default
    when the extra is installed."""
    if wanted is None:
        return has_module("jinja2") and has_module("matplotlib")
    if wanted:
        require_report()
    return wanted


def _with_classes(
    net: Segmentor, cfg: SegmentorConfig, old: ClassSet, new: ClassSet, seed: int
) -> tuple[Segmentor, dict[str, int]]:
    """`net` rebuilt for the classes `new`: classifier rows of shared names kept, the rest initialised."""
    k = len(new.classes)
    head = replace(cfg.decode_head, num_classes=k)
    aux = replace(cfg.auxiliary_head, num_classes=k) if cfg.auxiliary_head is not None else None
    new_cfg = SegmentorConfig(cfg.backbone, head, aux, cfg.normalization)
    fresh = Segmentor(new_cfg).to(net.device)
    shapes = {key: tuple(t.shape) for key, t in fresh.state_dict().items()}
    tensors, kept = remap(net.state_dict(), shapes, old.classes, new.classes, seed)
    fresh.load_state_dict(tensors, strict=True)
    return fresh, kept
