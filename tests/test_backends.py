"""Backends (`--backend auto|torch|compile|onnxruntime`): exact against eager float32, exports cached and
checked, the auto choice measured once and cached, recorded where outputs are; BatchNorm folding exact."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import random_image, run_cli
from PIL import Image

from segcli import Segmenter
from segcli.backends import BackendError, Choice, calibrate, view_shape
from segcli.backends.ort import _intact, export_key
from segcli.engine.presets import Params, Resize
from segcli.errors import UsageError
from segcli.extras import has_module
from segcli.loading.hub import segcli_cache
from segcli.model.fold import fold_batchnorm

HERE = Path(__file__).resolve().parent
COMPILER = shutil.which("c++") or shutil.which("g++")  # inductor's, on CPUs
HF = dict(resize="128x128")
SLIDE = dict(resize="none", mode="slide", crop=128, stride=85)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float((a == b).mean())


# --- what qualifies, what wins -------------------------------------------------------------------------------


def test_shares_read_100_percent_only_when_whole():
    from segcli.backends.base import share_text

    assert share_text(0.9999963) == "99.999%" and share_text(1.0) == "100.000%"
    assert share_text(0.99999, 2) == "99.99%" and share_text(0.5) == "50.000%" and share_text(0.0) == "0.000%"


@pytest.mark.parametrize(
    "params, shape",
    [
        (Params("x", Resize("keep", 512, 2048), mode="slide", crop=(512, 512), stride=(341, 341)), (512, 512)),
        (Params("x", Resize("fixed", height=512, width=384)), (512, 384)),
        (Params("x", Resize("keep", 512, 2048)), None),  # whole images at their own sizes
        (Params("x", Resize("fixed", height=512, width=512), scales=(0.5, 1.0)), None),  # two sizes
        (Params("x", Resize("none"), mode="slide", crop=(256, 320), stride=(128, 128), flip=True), (256, 320)),
    ],
)
def test_view_shape(params, shape):
    assert view_shape(params) == shape


@pytest.mark.parametrize(
    "seconds, best",
    [
        ({"torch": 1.0, "compile": 0.97, "onnxruntime": 1.2}, "torch"),  # 3 % is noise: torch stays
        ({"torch": 1.0, "compile": 0.80, "onnxruntime": 0.90}, "compile"),
        ({"torch": 1.0, "onnxruntime": 0.5}, "onnxruntime"),
        ({"torch": 0.7, "compile": 0.8}, "torch"),
    ],
)
def test_pick_needs_a_clear_win(seconds, best):
    assert calibrate.pick(seconds) == best


# --- BatchNorm folding -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["pspnet", "convnext", "upp"])
def test_fold_batchnorm_is_exact(which, tiny_pspnet_dir, tiny_convnext_dir, tiny_upp_dir):
    """Bottleneck (PSPNet), BasicBlock and the CSAIL pooling-first PPM (the parser's ResNet-18), ConvModules of
    the UPerNet head and the fused concatenation convolutions: every BatchNorm folded, every output kept."""
    src = {"pspnet": tiny_pspnet_dir, "convnext": tiny_convnext_dir, "upp": tiny_upp_dir}[which]
    ref, folded = Segmenter.from_pretrained(src).network, Segmenter.from_pretrained(src).network
    bns = sum(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    n = fold_batchnorm(folded)
    assert n == bns > 0 and not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 3, 160, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = ref(x), folded(x)
    for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,), strict=True):
        torch.testing.assert_close(v, u, rtol=0, atol=2e-5 * max(1.0, float(u.abs().max())))
        assert agreement(u.argmax(1).numpy(), v.argmax(1).numpy()) > 0.999


# --- each backend against eager float32 -----------------------------------------------------------------------


@pytest.fixture()
def cached_export(backend_exports, tiny_convnext_dir) -> None:
    """This test's (empty) segcli cache starts with the tiny ConvNeXt's 128x128 export in it (the HF and SLIDE
    views), made once per session."""
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the [onnx] extra)")
    backend_exports(tiny_convnext_dir, **HF)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnxruntime", "compile", "openvino"])
@pytest.mark.parametrize("mode", ["hf", "slide"])
def test_backend_labels_equal_eager(backend, mode, tiny_convnext_dir, cached_export):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the [onnx] extra)")
    if backend == "openvino":
        pytest.importorskip("openvino", reason="OpenVINO is not installed (the [openvino] extra)")
    if backend == "compile" and not COMPILER:
        pytest.skip("torch.compile (inductor) needs a C++ compiler")
    overrides = HF if mode == "hf" else SLIDE
    img = random_image(200, 300, seed=5)
    eager = Segmenter.from_pretrained(tiny_convnext_dir)
    other = Segmenter.from_pretrained(tiny_convnext_dir)
    choice = other.use_backend(backend, other.params("hf", **overrides))
    assert choice == Choice(backend, backend, "asked for") and other.runtime["backend"] == backend
    a, b = eager.run(img, "hf", logits=True, **overrides), other.run(img, "hf", logits=True, **overrides)
    assert agreement(a.labels, b.labels) >= 0.999
    torch.testing.assert_close(b.logits, a.logits, rtol=0, atol=1e-4 * max(1.0, float(a.logits.abs().max())))
    assert other.inference(other.params("hf", **overrides))["backend"] == backend


@pytest.mark.slow
def test_onnx_export_is_cached_keyed_and_checked(tiny_pspnet_dir):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the [onnx] extra)")
    said: list[str] = []
    seg = Segmenter.from_pretrained(tiny_pspnet_dir)
    whole = seg.params("hf", resize="none")  # whole images at their own sizes: the dynamic export
    seg.use_backend("onnxruntime", whole, log=said.append)
    assert sum("exporting" in s for s in said) == 1
    (folder,) = (segcli_cache() / "exports").iterdir()
    meta = json.loads((folder / "export.json").read_text())
    assert meta["weights_sha256"] == seg.info.origin.sha256 and meta["shape"] == "dynamic"
    assert meta["opset"] == 18 and meta["torch"] == torch.__version__
    img = random_image(150, 260, seed=6)  # a dynamic export runs any size
    ref = Segmenter.from_pretrained(tiny_pspnet_dir).predict(img, "hf", resize="none")
    assert agreement(seg.predict(img, "hf", resize="none"), ref) >= 0.999

    said.clear()  # a second process: loaded from the cache, not exported again
    again = Segmenter.from_pretrained(tiny_pspnet_dir)
    again.use_backend("onnxruntime", whole, log=said.append)
    assert not any("exporting" in s for s in said)

    assert agreement(again.predict(img, "hf", resize="none"), ref) >= 0.999  # the cached graph's labels
    assert again.model.size is None and again.model.runs(torch.randn(1, 3, 150, 260))
    (folder / "model.onnx").write_bytes(b"garbage")  # damaged: not intact, a miss (what a miss does, export
    assert _intact(folder, export_key(again.network, again.info, None)) is False  # again: hostile/test_caches.py)
    # one view size gets a static export at it, under its own key (the static ones: the tests below)
    static = export_key(again.network, again.info, (160, 224))
    assert static["shape"] == "160x224" and static != export_key(again.network, again.info, None)


@pytest.mark.slow
def test_swin_gets_a_fixed_size_export_and_other_sizes_run_eagerly(tiny_swin_dir, backend_exports):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the [onnx] extra)")
    seg = Segmenter.from_pretrained(tiny_swin_dir)
    with pytest.raises(UsageError, match="Swin exports need one fixed view size"):
        seg.use_backend("onnxruntime", seg.params("hf", resize="128:512"))  # whole images at their own sizes
    backend_exports(tiny_swin_dir, **SLIDE)  # the export for this view, made once per session (as below)
    params = seg.params("hf", **SLIDE)
    seg.use_backend("onnxruntime", params)
    assert seg.model.size == (128, 128)
    meta = json.loads(next((segcli_cache() / "exports").glob("*/export.json")).read_text())
    assert meta["shape"] == "128x128"
    eager = Segmenter.from_pretrained(tiny_swin_dir)
    x = torch.randn(1, 3, 96, 160)  # not the export's size: the network runs it
    assert not seg.model.runs(x) and seg.model.runs(torch.randn(2, 3, 128, 128))
    assert not seg.model.runs(torch.randn(2, 3, 128, 128), upsample=False)  # logits at the model's resolution
    with torch.no_grad():
        torch.testing.assert_close(seg.model(x), eager.model(x), rtol=0, atol=0)
    img = random_image(200, 300, seed=7)  # windows of 128 (inside), and the slide run as a whole
    assert agreement(seg.predict(img, params), eager.predict(img, params)) >= 0.999


def test_what_a_backend_cannot_run_is_refused(tiny_convnext_dir, tiny_upp_dir, tiny_pspnet_dir):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the [onnx] extra)")
    with pytest.raises(UsageError, match="unknown backend 'tensorrt'"):
        Segmenter.from_pretrained(tiny_convnext_dir, backend="tensorrt")
    bf16 = Segmenter.from_pretrained(tiny_convnext_dir, dtype="bfloat16")
    with pytest.raises(UsageError, match="float32 on the CPU only"):
        bf16.use_backend("onnxruntime")
    upp = Segmenter.from_pretrained(tiny_upp_dir)
    with pytest.raises(UsageError, match=r"not a parser.s four heads"):
        upp.use_backend("onnxruntime", upp.params("hf", resize="128x128"))
    psp = Segmenter.from_pretrained(tiny_pspnet_dir)
    with pytest.raises(UsageError, match="resizes logits once"):  # the authors' test resizes from 1/8 once
        psp.use_backend("onnxruntime", psp.params("csail"))
    assert issubclass(BackendError, Exception)


# --- auto ------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_auto_measures_once_caches_and_uses_the_winner(tiny_convnext_dir, cached_export):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the [onnx] extra)")
    if not COMPILER:
        pytest.skip("torch.compile (inductor) needs a C++ compiler")
    seg = Segmenter.from_pretrained(tiny_convnext_dir)
    params = seg.params("hf", **HF)
    first = seg.use_backend("auto", params, calibrate=False)  # nothing cached, not allowed to measure
    assert first.backend == "torch" and "not measured" in first.reason and first.seconds is None

    said: list[str] = []
    choice = seg.use_backend("auto", params, log=said.append)
    candidates = ["compile", "onnxruntime", *(["openvino"] if has_module("openvino") else [])]
    assert any(f"measuring {', '.join(['torch', *candidates])} at 128x128" in s for s in said), said
    n = len(candidates)
    for step in (
        f"preparing compile (1 of {n})",
        "compile ready in",
        f"preparing onnxruntime (2 of {n})",
        "measured in",
    ):
        assert any(step in s for s in said), (step, said)  # each candidate said, with its time
    assert set(choice.seconds) == {"torch", *candidates}
    assert choice.backend == calibrate.pick(choice.seconds) == seg.runtime["backend"]
    entries = json.loads(calibrate.cache_file().read_text())
    (entry,) = entries.values()
    assert entry["choice"] == choice.backend and entry["seconds"] == choice.seconds
    (listed,) = calibrate.entries()  # what `segcli models --backends` shows
    assert listed["model"] == seg.info.name and listed["view"] == "128x128" and listed["choice"] == choice.backend
    assert listed["measured_at"].startswith("20") and listed["device"] == "cpu"
    r = run_cli("models", "--backends")
    assert r.exit_code == 0 and f"{seg.info.name} 128x128 cpu" in r.stdout and choice.backend in r.stdout

    said.clear()  # another process, same machine and architecture: the cached figure decides
    other = Segmenter.from_pretrained(tiny_convnext_dir)
    again = other.use_backend("auto", params, calibrate=False, log=said.append)
    assert again.backend == choice.backend and again.seconds == choice.seconds
    assert not any("measuring" in s for s in said)
    said.clear()  # --backend-measure again: measured now, the cached figures replaced
    anew = Segmenter.from_pretrained(tiny_convnext_dir).use_backend(
        "auto", params, calibrate=False, remeasure=True, log=said.append
    )
    assert any("measuring" in s for s in said) and anew.seconds != choice.seconds
    (entry,) = json.loads(calibrate.cache_file().read_text()).values()
    assert entry["seconds"] == anew.seconds
    img = random_image(200, 300, seed=8)
    ref = Segmenter.from_pretrained(tiny_convnext_dir).predict(img, params)
    assert agreement(other.predict(img, params), ref) >= 0.999


@pytest.mark.slow
def test_auto_without_onnxruntime_falls_back_and_says_so(tiny_convnext_dir, tmp_path):
    """A machine without the [onnx] extra (onnxruntime blocked in sys.modules): a run that measures
    (`--backend-measure again`: a tiny model's run never pays for it, see test_budget) measures what is there, and the JSON and stderr say why onnxruntime is not among them. (128x128 views:
    the graph the tests above compiled, so inductor's on-disk cache serves this process.)"""
    src = tmp_path / "in"
    src.mkdir()
    for i in range(8):
        Image.fromarray(random_image(64, 80, seed=20 + i)).save(src / f"p{i}.png")
    code = (
        "import sys; sys.modules['onnxruntime'] = None\n"
        "from segcli.cli.app import main\n"
        f"sys.argv = ['segcli', 'predict', {str(src)!r}, '-o', {str(tmp_path / 'out')!r}, '-m', "
        f"{str(tiny_convnext_dir)!r}, '--preset', 'hf', '--resize', '128x128', '--backend', 'auto', "
        "'--backend-measure', 'again']\n"
        "main()\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    backend = summary["backend"]
    assert backend["requested"] == "auto" and backend["backend"] in ("torch", "compile")
    assert set(backend["seconds"]) == ({"torch", "compile"} if COMPILER else {"torch"})
    assert "onnxruntime is not installed" in backend["reason"]
    assert "onnxruntime is not installed" in r.stderr and f"segcli: backend {backend['backend']} (" in r.stderr
    assert summary["inference"]["backend"] == backend["backend"]
    record = json.loads((tmp_path / "out" / "p0.json").read_text())
    assert record["inference"]["backend"] == backend["backend"]


# --- the CLI: recorded, part of the resume fingerprint --------------------------------------------------------


@pytest.mark.slow
def test_backend_is_recorded_and_part_of_the_fingerprint(cli, tiny_convnext_dir, tmp_path, cached_export):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the [onnx] extra)")
    src = tmp_path / "in"
    src.mkdir()
    for i in range(2):
        Image.fromarray(random_image(96, 128, seed=10 + i)).save(src / f"p{i}.png")
    out = tmp_path / "out"
    base = ["predict", src, "-o", out, "-m", tiny_convnext_dir, "--preset", "hf", "--resize", "128x128"]
    r = cli(*base, "--backend", "onnxruntime", "--jsonl")
    assert r.exit_code == 0, r.stderr
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert [rec["inference"]["backend"] for rec in records] == ["onnxruntime"] * 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"]["backend"] == "onnxruntime" and summary["inference"]["backend"] == "onnxruntime"
    ort_labels = np.asarray(Image.open(out / "p0.png"))

    r = cli(*base, "--backend", "onnxruntime", "--jsonl")  # same backend: resumed
    assert [json.loads(line)["status"] for line in r.stdout.splitlines()] == ["skipped"] * 2
    r = cli(*base, "--backend", "auto", "--jsonl")  # auto keeps the earlier run's backend: still resumed
    assert [json.loads(line)["status"] for line in r.stdout.splitlines()] == ["skipped"] * 2
    assert "the backend of the earlier run" in json.loads((out / "summary.json").read_text())["backend"]["reason"]
    r = cli(*base, "--backend", "torch", "--jsonl")  # another backend: another fingerprint, redone
    assert [json.loads(line)["status"] for line in r.stdout.splitlines()] == ["done"] * 2
    assert agreement(np.asarray(Image.open(out / "p0.png")), ort_labels) >= 0.999


def test_unknown_backend_is_a_usage_error(cli, tiny_convnext_dir, tmp_path):
    img = tmp_path / "a.png"
    Image.fromarray(random_image(32, 32)).save(img)
    r = cli("predict", img, "-o", tmp_path / "out", "-m", tiny_convnext_dir, "--backend", "tensorrt")
    assert r.exit_code == 2
    assert "unknown backend 'tensorrt'" in r.stderr and "auto, torch, compile, onnxruntime" in r.stderr
    assert not (tmp_path / "out" / "a.png").exists()


@pytest.mark.parametrize(
    "model, asked, runs",
    [
        ("convnext", "auto", "torch"),
        ("convnext", "onnxruntime", "onnxruntime"),
        ("convnext", "compile", "compile"),
        pytest.param("onnx", "auto", "onnxruntime", marks=pytest.mark.slow),  # an export runs in onnxruntime there too
        pytest.param("onnx", "torch", "onnxruntime", marks=pytest.mark.slow),
    ],
)
def test_ray_workers_get_a_named_backend(request, model, asked, runs, tiny_convnext_dir, tmp_path):
    """The driver cannot measure the workers: auto means torch there; a named backend is every worker's."""
    from segcli.batch import Options
    from segcli.batch.ray import job_for

    src = request.getfixturevalue("onnx_convnext") if model == "onnx" else tiny_convnext_dir  # (made once)
    seg = Segmenter.from_pretrained(src)
    params = seg.params("hf")
    job = job_for(seg, "m", params, Options(tmp_path), gpus=0, threads=1, dtype="auto", registry=None, backend=asked)
    inference = job.record.inference
    assert job.backend == runs and inference["backend"] == runs and inference["dtype"] == "float32"
    assert inference == {**seg.inference(params), "backend": runs}  # what a worker checks it would record


def test_openvino_compiles_the_cached_export_in_float32(tiny_convnext_dir, cached_export):
    """The onnxruntime backend's export (cached, checked) is what OpenVINO compiles — no second export — and
    in float32 whatever the CPU: OpenVINO's own default on AVX512-BF16 / AMX CPUs is bfloat16."""
    pytest.importorskip("openvino", reason="OpenVINO is not installed (the [openvino] extra)")
    said: list[str] = []
    seg = Segmenter.from_pretrained(tiny_convnext_dir)
    params = seg.params("hf", **HF)
    seg.use_backend("openvino", params, log=said.append)
    assert not any("exporting" in s for s in said) and any("compiling the ONNX export with OpenVINO" in s for s in said)
    assert str(seg.model.compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"
    assert seg.model.size == (128, 128) and not seg.model.runs(torch.randn(1, 3, 96, 160))
    img = random_image(150, 200, seed=9)
    ref = Segmenter.from_pretrained(tiny_convnext_dir).run(img, params, logits=True)
    got = seg.run(img, params, logits=True)
    assert agreement(got.labels, ref.labels) >= 0.999
    torch.testing.assert_close(got.logits, ref.logits, rtol=0, atol=1e-4 * max(1.0, float(ref.logits.abs().max())))


def test_openvino_missing_is_one_line_naming_the_extra(tiny_convnext_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # as on a machine without the [openvino] extra
    seg = Segmenter.from_pretrained(tiny_convnext_dir)
    with pytest.raises(UsageError, match=r"--backend openvino: openvino is not installed.*pip install openvino"):
        seg.use_backend("openvino", seg.params("hf", **HF))
    assert seg.runtime["backend"] == "torch"
