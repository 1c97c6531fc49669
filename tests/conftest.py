from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
# inductor's scalar C++ kernels compile in half the time of its vectorised ones (a cold `--backend compile`
# test: 65 s instead of 107 s on 2 cores); the tests check what segcli makes of a compiled graph, not its speed
# (benchmarks/backends.py measures the vectorised one). Set here, so the CLI subprocesses inherit it.
os.environ.setdefault("TORCHINDUCTOR_VEC_ISA_OK", "0")
if os.environ.get("PYTEST_XDIST_WORKER"):  # one of the two workers `-n 2` runs on a core each: a thread each,
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # theirs and their subprocesses' (two threads per worker
    # on 2 cores spin-wait on each other: a parity test took 38 s instead of 2 s)

from fakehub import FakeHub
from helpers import randomize_, run_cli, save_hf_dir, save_tiny_upp, tiny_convnext, tiny_swin

_ENV_CLEARED = (
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_HUB_OFFLINE",
    "HF_HUB_ETAG_TIMEOUT",
    "HF_ENDPOINT",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "SEGCLI_REGISTRY",
    "SEGCLI_DEBUG",
    "SEGCLI_DTYPE",
    "SEGCLI_BACKEND",
    "XDG_CACHE_HOME",
)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory, monkeypatch):
    """Every test gets its own empty HF cache and segcli cache, and no Hub / registry settings."""
    base = tmp_path_factory.mktemp("env")
    _isolate(monkeypatch, base)
    yield base


def _isolate(monkeypatch: pytest.MonkeyPatch, base: Path) -> None:
    for name in _ENV_CLEARED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(base / "hf"))
    monkeypatch.setenv("SEGCLI_CACHE", str(base / "segcli-cache"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # the CLI's --dtype auto may pick bfloat16 on some CPUs: tests compare with float32 unless they say otherwise
    monkeypatch.setenv("SEGCLI_DTYPE", "float32")
    # and --backend auto would calibrate (a minute): tests run eager torch unless they say otherwise
    monkeypatch.setenv("SEGCLI_BACKEND", "torch")


@pytest.fixture(scope="session")
def cli():
    """`cli("predict", path, "-o", out)` → the CliRunner result of `segcli predict PATH -o OUT`."""
    return run_cli


@pytest.fixture(scope="session")
def tiny_convnext_dir(tmp_path_factory) -> Path:
    """A tiny random UperNet-ConvNeXt (150 ADE20K classes) as save_pretrained writes it. Read-only."""
    return save_hf_dir(randomize_(tiny_convnext(), seed=1), tmp_path_factory.mktemp("tiny-convnext"))


@pytest.fixture(scope="session")
def tiny_swin_dir(tmp_path_factory) -> Path:
    return save_hf_dir(randomize_(tiny_swin(), seed=2), tmp_path_factory.mktemp("tiny-swin"))


@pytest.fixture(scope="session")
def tiny_pspnet_dir(tmp_path_factory) -> Path:
    """A reduced PSPNet (dilated ResNet-50 with one block per stage, 32-channel head, 19 Cityscapes classes,
    random BatchNorm statistics) as `segcli export -f safetensors-fp16` writes a model directory (float32)."""
    import torch

    from segcli.backends.export import save_native
    from segcli.loading.classes import known_set
    from segcli.loading.info import ModelInfo
    from segcli.model import Segmentor, SegmentorConfig
    from segcli.model.backbones import ResNetConfig
    from segcli.model.heads.fcn import FCNHeadConfig
    from segcli.model.heads.psp import PSPHeadConfig

    bb = ResNetConfig(50, (1, 2, 1, 1), (1, 1, 2, 4), blocks=(1, 1, 1, 1))
    net = SegmentorConfig(
        bb, PSPHeadConfig(2048, 19, channels=32, align_corners=True), FCNHeadConfig(1024, 19, channels=16)
    )
    model = randomize_(Segmentor(net), seed=3).eval()
    info = ModelInfo("tiny-pspnet", net, known_set("cityscapes"))
    return save_native(model, info, tmp_path_factory.mktemp("pspnet"), dtype=torch.float32)


@pytest.fixture(scope="session")
def tiny_upp_dir(tmp_path_factory) -> Path:
    """A reduced unified perceptual parser (ResNet-18 with one block per stage, 32-channel heads) with the
    real class sets and part hierarchy, as `segcli convert` writes a model directory. Read-only."""
    return save_tiny_upp(tmp_path_factory.mktemp("tiny-upp"))


@pytest.fixture(scope="session")
def backend_exports(tmp_path_factory):
    """`put(model_dir, **view)`: this test's segcli cache gets the onnxruntime backend's export of the model
    for that view's shape, made (exported and verified, in a cache of its own) once per session — for the
    tests that use an export; those that prove one is made start from an empty cache."""
    import shutil

    from segcli import Segmenter
    from segcli.backends import view_shape
    from segcli.loading.hub import segcli_cache

    made: dict[tuple[str, object], Path] = {}

    def put(src: Path, **view: object) -> None:
        seg = Segmenter.from_pretrained(src)
        params = seg.params("hf", **view)
        key = (str(src), view_shape(params))
        if key not in made:
            base = tmp_path_factory.mktemp("backend-export")
            with pytest.MonkeyPatch.context() as mp:
                _isolate(mp, base)
                seg.use_backend("onnxruntime", params)
            made[key] = base / "segcli-cache" / "exports"
        shutil.copytree(made[key], segcli_cache() / "exports", dirs_exist_ok=True)

    return put


@pytest.fixture(scope="session")
def onnx_kept(tiny_convnext_dir, tmp_path_factory):
    """(the CliRunner result, the file) of `segcli export` of the tiny ConvNeXt to ONNX at 128x128 with a
    --atol no export meets (1e-12): the verification fails and the file is kept. Read-only."""
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the [onnx] extra)")
    base = tmp_path_factory.mktemp("onnx")
    out = base / "convnext.onnx"
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, base)
        r = run_cli("export", tiny_convnext_dir, "-f", "onnx", "-o", out, "--size", "128x128", "--atol", "1e-12")
    return r, out


@pytest.fixture(scope="session")
def onnx_convnext(onnx_kept) -> Path:
    """The tiny ConvNeXt's 128x128 ONNX export, as `segcli export` writes it (with its sidecar). Read-only."""
    r, out = onnx_kept
    assert out.is_file() and Path(f"{out}.json").is_file(), r.stderr
    return out


@pytest.fixture()
def fake_hub(monkeypatch):
    hub = FakeHub().start()
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    yield hub
    hub.stop()


def pytest_collection_modifyitems(config, items):
    """Hub tests download real checkpoints: they run only when the marker expression names them (`-m hub`),
    whatever else `-m` says (`-m "not slow"` replaces the default `-m 'not hub'`)."""
    if "hub" in (config.option.markexpr or "") and "not hub" not in config.option.markexpr:
        return
    skip = pytest.mark.skip(reason="downloads real checkpoints: opt in with pytest -m hub")
    for item in items:
        if "hub" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def small_model(tmp_path_factory) -> Path:
    """The tiny UperNet-ConvNeXt with its `hf` protocol at the data's 48×64 (the training's base scale)."""
    from transformers import SegformerImageProcessor

    path = save_hf_dir(randomize_(tiny_convnext(), seed=1), tmp_path_factory.mktemp("small"), processor=False)
    SegformerImageProcessor(size={"height": 48, "width": 64}).save_pretrained(path)
    return path
