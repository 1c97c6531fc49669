"""Training a unified perceptual parser on heterogeneous labels: the manifest, per-source batches, the
labels at the heads' resolution with the authors' part validity, and `--tasks` keeping the other heads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from segcli.engine.heads import Heads, PartGroup
from segcli.train.augment import Pipeline
from segcli.train.parsing_data import ParsingSamples, Record, SourcePlan, find, read_manifest, sample
from segcli.train.step import Slice

SCENES = ("airfield", "bedroom", "kitchen")
PERSON, OTHER = 6, 300  # an object with parts (group -, leg, head, torso, ...) and one without


def _write(root: Path, name: str, a: np.ndarray) -> str:
    Image.fromarray(a).save(root / name)
    return name


def parser_data(root: Path, people: int = 4, surfaces: int = 2) -> Path:
    """Images of 48×64: `people` with objects (person on top, a part-less object below), global parts
    (head 2, torso 3) and a scene; `surfaces` with materials only (source "os"); one validation image."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(people):
        obj = np.full((48, 64), OTHER, np.uint16)
        obj[:24] = PERSON
        part = np.zeros((48, 64), np.uint8)
        part[:12], part[12:24, :32] = 2, 3
        lines.append({
            "image": _write(root, f"p{i}.jpg", rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)),
            "object": _write(root, f"p{i}_object.png", obj), "part": _write(root, f"p{i}_part.png", part),
            "scene": SCENES[i % 3] if i % 2 else i % 3,
        })  # fmt: skip
    for i in range(surfaces):
        mat = np.full((48, 64), 5, np.uint8)
        mat[:, 32:] = 9
        lines.append({
            "image": _write(root, f"s{i}.jpg", rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)),
            "material": _write(root, f"s{i}_material.png", mat), "source": "os",
        })  # fmt: skip
    lines.append({"image": "p0.jpg", "object": "p0_object.png", "split": "val"})
    path = root / "data.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_the_manifest_declares_tasks_sources_and_splits_and_each_bad_line_is_one_problem(tmp_path):
    path = parser_data(tmp_path, people=2, surfaces=1)
    with path.open("a") as f:
        f.write('{"image": "x.jpg", "part": "x.png"}\n')  # parts without objects
        f.write('{"image": "x.jpg", "object": "x.png", "colour": 1}\n')
        f.write('{"image": "x.jpg", "scene": "moon base"}\n')
        f.write('{"image": "x.jpg", "scene": 3}\n')  # outside the 3 scenes
        f.write('{"image": "x.jpg", "material": "m.png", "source": "../up"}\n')
        f.write('{"image": "x.jpg"}\n')
        f.write("[1, 2]\n")
        f.write("{not json\n")
    records, problems = read_manifest(path, SCENES)
    assert [(r.source, r.tasks, split) for r, split in records] == [
        ("object+part+scene", ("object", "part", "scene"), "train"),
        ("object+part+scene", ("object", "part", "scene"), "train"),
        ("os", ("material",), "train"),
        ("object", ("object",), "val"),
    ]
    assert [r.scene for r, _ in records[:2]] == [0, 1]  # an index, and the name "bedroom"
    assert records[0][0].image == tmp_path / "p0.jpg"  # relative to the manifest
    assert len(problems) == 8 and all(p.startswith(f"{path}:") for p in problems)
    for line, words in zip(
        range(5, 13), ["needs", "colour", "moon base", "outside", "source", "no labels", "JSON", ""], strict=True
    ):
        assert problems[line - 5].startswith(f"{path}:{line}: ") and words in problems[line - 5]
    split = find(path, SCENES, None, None, 0)
    assert (len(split.train), len(split.val)) == (3, 1) and len(split.problems) == 8


def test_each_iteration_draws_one_source_in_proportion_and_reads_each_image_once_per_epoch():
    plan = SourcePlan([200, 100], seed=3, iterations=9000)  # blocks of 4096: three of them
    draws = [plan(t) for t in range(9000)]
    firsts = [s for s, _ in draws]
    assert abs(firsts.count(0) / 9000 - 2 / 3) < 0.02
    seen = {0: 0, 1: 0}
    for s, k in draws:  # k: how many earlier iterations drew the same source
        assert k == seen[s]
        seen[s] += 1
    records = [Record(Path(f"{s}{i}.jpg"), s, "") for s, n in (("a", 6), ("b", 3)) for i in range(n)]
    part = Slice(0, 40, batch=1, rank=0, ranks=1, accumulate=2)
    data = ParsingSamples(records, Heads(2), Pipeline((8, 8)), seed=1, part=part)
    picked = []
    for i in range(len(part)):  # the record each sample reads, as __getitem__ picks it (no files needed)
        g = part.sample(i)
        t, offset = divmod(g, 2)
        s, k = data.plan(t)
        q = k * 2 + offset
        order = np.random.default_rng([1, s, q // len(data.sources[s])]).permutation(len(data.sources[s]))
        picked.append((t, data.sources[s][int(order[q % len(data.sources[s])])]))
    by_iter: dict[int, set[str]] = {}
    for t, r in picked:
        by_iter.setdefault(t, set()).add(r.source)
    assert all(len(v) == 1 for v in by_iter.values())  # a global batch from one source
    stream = [r.image.name for _, r in picked if r.source == "b"]
    assert len(stream) >= 6 and sorted(stream[:3]) == sorted(stream[3:6]) == ["b0.jpg", "b1.jpg", "b2.jpg"]


def test_labels_come_down_to_the_heads_resolution_with_local_parts_and_the_authors_validity(tmp_path):
    path = parser_data(tmp_path, people=1, surfaces=0)
    record = read_manifest(path, SCENES)[0][0][0]
    heads = Heads(336, (("material", 26),), (PartGroup(PERSON, (0, 1, 2, 3)), PartGroup(2, (0, 82))), 0, 153)
    still = Pipeline(
        (48, 64), ratio=(1.0, 1.0), flip=0.0, photometric=False, cat_max_ratio=1.0, base=(64, 48), ignore=0
    )
    image, labels = sample(record, ["object", "part", "scene"], heads, still, np.random.default_rng(0))
    assert image.shape == (3, 48, 64) and set(labels) == {"object", "part", "valid_part", "scene"}
    obj = np.asarray(Image.open(tmp_path / "p0_object.png")).astype(np.int64)
    assert (labels["object"].numpy() == obj[2::4, 2::4]).all()  # the centre of each 4×4 cell
    expected = np.zeros((12, 16), np.int64)
    expected[:3], expected[3:6, :8] = 2, 3  # head, torso: their indices in the person's group (0, 1, 2, 3)
    assert (labels["part"].numpy() == expected).all()
    assert labels["valid_part"].tolist() == [True, False]  # the sky is absent
    assert int(labels["scene"]) == 0
    flat = np.zeros((48, 64), np.uint8)
    flat[:24] = 2  # the whole person one part: with the "-" outside it two group labels, valid as theirs
    Image.fromarray(flat).save(tmp_path / "p0_part.png")
    assert sample(record, ["object", "part"], heads, still, np.random.default_rng(0))[1]["valid_part"][0]
    Image.fromarray(np.full((48, 64), 82, np.uint8)).save(tmp_path / "p0_part.png")  # not a person's part
    _, none = sample(record, ["object", "part"], heads, still, np.random.default_rng(0))
    assert not none["valid_part"].any() and not none["part"].any()


@pytest.mark.slow
def test_training_some_tasks_keeps_the_other_heads_and_logs_each_sources_terms(cli, tiny_upp_dir, tmp_path):
    data = parser_data(tmp_path)
    r = cli("train", data, "-m", tiny_upp_dir, "-o", tmp_path / "run", "--tasks", "object,material",
            "--iters", "6", "--batch", "2", "--crop", "32", "--workers", "0", "--log-every", "1",
            "--val-every", "6", "--no-report", "--amp", "off")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert "sources: object+part+scene 4, os 2" in r.stderr
    before, after = load_file(tiny_upp_dir / "model.safetensors"), load_file(tmp_path / "run/model/model.safetensors")
    assert set(before) == set(after)
    for key in before:
        same = bool((before[key] == after[key]).all())
        if key.startswith(("decode_head.part_head.", "decode_head.scene_head.")):
            assert same, key  # weights and BatchNorm statistics
        elif key.startswith(("decode_head.object_head.", "decode_head.material_head.")) and "num_batches" not in key:
            assert not same, key
    log = [json.loads(line) for line in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    steps = [rec for rec in log if "lr" in rec]
    assert len(steps) == 6
    terms = {tuple(sorted(k for k in rec if k in ("object", "part", "material", "scene"))) for rec in steps}
    assert terms <= {("object",), ("material",)} and len(terms) == 2  # one source per batch, its trained tasks
    for rec in steps:
        assert rec["total"] == pytest.approx(rec.get("object", 0) + rec.get("material", 0), rel=1e-6)
    val = [rec for rec in log if "val_mIoU" in rec]
    assert len(val) == 1 and set(val[0]) >= {"val_object_mIoU", "val_mIoU"} and "val_scene_acc" not in val[0]
    settings = json.loads((tmp_path / "run/model/config.json").read_text())
    assert "material" in json.dumps(settings)  # the parser's heads written with the model
    refused = cli("train", data, "-m", tiny_upp_dir, "-o", tmp_path / "r2", "--tasks", "object,texture")
    assert refused.exit_code == 2 and "--tasks object,texture" in refused.stderr


def test_the_parser_recipe_is_the_authors_groups_and_schedule(tiny_upp_dir):
    import torch

    from segcli import Segmenter
    from segcli.train.recipes import lr_at, optimizer, recipe_for

    net = Segmenter.from_pretrained(tiny_upp_dir).network
    r = recipe_for(net)
    assert (r.name, r.optimizer, r.lr, r.weight_decay, r.momentum) == ("upp", "sgd", 0.02, 1e-4, 0.9)
    decay, no_decay = [], []  # unifiedparsing train.py group_weight, transcribed
    for m in net.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.modules.conv._ConvNd)):
            decay.append(m.weight)
            no_decay += [m.bias] if m.bias is not None else []
        elif isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            no_decay += [m.weight, m.bias]
    groups = {g["weight_decay"]: {id(p) for p in g["params"]} for g in optimizer(net, r).param_groups}
    assert groups == {1e-4: {id(p) for p in decay}, 0.0: {id(p) for p in no_decay}}
    lr, max_iters = 0.02, 50  # their loop: lr set for the next iteration after each step (cur_iter = i)
    theirs = [lr] + [lr * (1 - i / max_iters) ** 0.9 for i in range(max_iters - 1)]
    assert [lr_at(r, t, max_iters) for t in range(max_iters)] == pytest.approx(theirs, rel=1e-12)
