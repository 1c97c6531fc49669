"""Test helpers: random-weight reference models (transformers 4.57.6) saved in the Hub layout."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import signal
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).parent / "data"
ORIGINAL_ENV = dict(os.environ)  # as the tests started: opt-in Hub tests use the user's real cache and settings
ADE_CLASSES = json.loads((Path(__file__).parents[1] / "segcli" / "loading" / "data" / "ade20k.json").read_text())[
    "classes"
]


def run_cli(*args: object, input: bytes | str | None = None):
    """`segcli ARGS...` in this process (Typer's CliRunner): exit code, stdout and stderr apart. Tests take it
    as the `cli` fixture."""
    from typer.testing import CliRunner

    from segcli.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args], input=input)


STAGES = ["stage1", "stage2", "stage3", "stage4"]


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter and BatchNorm statistic a random, non-default value.

    Defaults (LayerNorm 1/0, BN mean 0 / var 1, layer scale 1e-6, zero relative-position bias) would let a
    wrong implementation of those parts pass unnoticed, so each is drawn from a distribution whose spread
    keeps activations of a deep random network in a trained-like range.
    """
    g = torch.Generator().manual_seed(seed)

    def rand(shape, lo, hi):
        return torch.rand(shape, generator=g) * (hi - lo) + lo

    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if "layer_scale" in name:
                p.copy_(rand(p.shape, 0.05, 0.5))
            elif "relative_position_bias_table" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            elif p.ndim == 1 and leaf == "weight":  # LayerNorm / BatchNorm scale
                p.copy_(rand(p.shape, 0.5, 1.5))
            elif leaf == "bias":
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            else:  # conv / linear weights, fan-in scaled
                fan_in = p[0].numel() if p.ndim > 1 else 1
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / fan_in) ** 0.5)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.2)
            elif name.endswith("running_var"):
                b.copy_(rand(b.shape, 0.5, 2.0))
            elif name.endswith("num_batches_tracked"):
                b.fill_(1000)
    return model


def hf_convnext(depths, widths, num_labels=150, aux_in=None, **kw):
    from transformers import ConvNextConfig

    bb = ConvNextConfig(depths=list(depths), hidden_sizes=list(widths), out_features=STAGES)
    return _upernet(bb, widths, num_labels, aux_in, **kw)


def hf_swin(embed_dim, depths, heads, window, num_labels=150, aux_in=None, **kw):
    from transformers import SwinConfig, UperNetConfig  # noqa: F401

    bb = SwinConfig(
        embed_dim=embed_dim, depths=list(depths), num_heads=list(heads), window_size=window, out_features=STAGES
    )
    widths = [embed_dim * 2**i for i in range(4)]
    return _upernet(bb, widths, num_labels, aux_in, **kw)


def _upernet(bb, widths, num_labels, aux_in, hidden_size=512, aux_channels=256, id2label=None, **kw):
    from transformers import UperNetConfig, UperNetForSemanticSegmentation

    if id2label is None:
        id2label = {i: ADE_CLASSES[i] for i in range(num_labels)} if num_labels == 150 else None
    extra = {"id2label": id2label} if id2label else {"num_labels": num_labels}
    cfg = UperNetConfig(
        backbone_config=bb,
        hidden_size=hidden_size,
        auxiliary_channels=aux_channels,
        auxiliary_in_channels=aux_in or widths[2],
        **extra,
        **kw,
    )
    return UperNetForSemanticSegmentation(cfg).eval()


def tiny_convnext(**kw):
    return hf_convnext((1, 1, 2, 1), (16, 24, 32, 40), hidden_size=32, aux_channels=16, **kw)


def tiny_swin(**kw):
    """Two blocks (one shifted) where the map is larger than the window, one block per later stage: the same
    code paths at a fraction of the export time."""
    return hf_swin(16, (2, 1, 1, 1), (1, 2, 2, 4), window=7, hidden_size=32, aux_channels=16, **kw)


def save_hf_dir(model, path: Path, processor: bool = True) -> Path:
    """`save_pretrained(safe_serialization=True)` plus the Hub's preprocessor_config.json."""
    from transformers import SegformerImageProcessor

    model.save_pretrained(path, safe_serialization=True)
    if processor:
        SegformerImageProcessor().save_pretrained(path)
    return path


def hf_logits_from_file(model, image_path: Path) -> torch.Tensor:
    """transformers' own pipeline: processor → model → logits resized to the image size. [K, H, W]."""
    from PIL import Image
    from transformers import SegformerImageProcessor

    image = Image.open(image_path).convert("RGB")
    pixel_values = SegformerImageProcessor()(image, return_tensors="pt").pixel_values
    with torch.no_grad():
        logits = model(pixel_values).logits
    size = (image.height, image.width)
    return torch.nn.functional.interpolate(logits, size=size, mode="bilinear", align_corners=False)[0]


def reference_keys(name: str) -> tuple[dict[str, tuple[tuple[int, ...], str]], dict[str, int]]:
    """Key → (shape, dtype) of a Hub checkpoint, and the header totals, from tests/data/checkpoint-keys."""
    keys, totals = {}, {}
    text = gzip.decompress((DATA / "checkpoint-keys" / f"keys_{name}.txt.gz").read_bytes()).decode()
    for line in text.splitlines():
        if line.startswith("# params"):
            for part in line[2:].split()[1:]:
                k, v = part.split("=")
                totals[k] = int(v.replace(",", ""))
        elif line.startswith("# state_dict"):
            totals["fp32_bytes"] = int(line.rsplit("=", 1)[1].replace(",", ""))
        elif line and not line.startswith("#"):
            key, shape, dtype = line.split("\t")[:3]
            keys[key] = (tuple(json.loads(shape)), dtype)
    return keys, totals


def random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth, photo-like RGB uint8 image (gradients + blobs), so resizing is not dominated by noise."""
    from segcli.io.images import synthetic_photo

    return synthetic_photo(h, w, seed)


def assert_labels_agree(got: np.ndarray, scores: np.ndarray, tol: float, what: str = "labels") -> None:
    """`got` [H, W] equals the argmax of the reference `scores` [C, H, W] except at near-ties: wherever they
    differ, the reference scores `got`'s class within `tol` of its best. Bilinear upsampling passes through
    exact ties along every class boundary, so two implementations whose scores differ by rounding (thread
    counts, AVX2 vs AVX-512 kernels) can pick either class there; a real difference is far from a tie."""
    ref = scores.argmax(0)
    ys, xs = np.nonzero(got != ref)
    margins = scores[ref[ys, xs], ys, xs] - scores[got[ys, xs], ys, xs]
    worst = float(margins.max()) if margins.size else 0.0
    assert worst <= tol, f"{what}: {ys.size} pixels differ, one by a score margin of {worst:.3g} (> {tol:g})"


@contextlib.contextmanager
def no_hang(seconds: float = 60.0):
    """Fail what runs longer than `seconds`: a hang, not slowness (speed is the benchmarks' business, and a
    busy machine is slow). Main thread only (SIGALRM)."""

    def stop(signum, frame):
        raise TimeoutError(f"still running after {seconds:g} s: a hang")

    old = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def photo(path: Path, h: int = 24, w: int = 32, seed: int = 0) -> Path:
    """`random_image` saved at `path` (its folders made)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(random_image(h, w, seed=seed)).save(path)
    return path


def save_tiny_upp(path: Path, seed: int = 4) -> Path:
    """A reduced unified perceptual parser in segcli's model-directory format (see conftest.tiny_upp_dir)."""
    from dataclasses import replace

    from segcli.engine.presets import Protocol
    from segcli.loading.classes import head_sets, known_set, parsing_head
    from segcli.loading.formats import native
    from segcli.loading.formats.arch import network_from_tables
    from segcli.loading.registry import load_registry
    from segcli.model import Segmentor

    upp = load_registry()["upp-resnet50-upernet"].network
    backbone = {"type": "resnet", "depth": 18, "blocks": [1, 1, 1, 1]}
    head = {"type": "upp", "channels": 32, **parsing_head("unifiedparsing")}
    network = replace(network_from_tables(backbone, head, 336, "tiny upp"), normalization=upp.normalization)
    model = randomize_(Segmentor(network), seed=seed)
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    proto = Protocol(resize="300:1000/8")
    sets = head_sets("unifiedparsing")
    return native.write(path, tensors, network, known_set("unifiedparsing"), "upp", proto, {}, head_sets=sets)


VIDEO_W, VIDEO_H, VIDEO_FPS = 64, 48, 10  # the test videos: frames 0.1 s apart


def frame_image(i: int, w: int = VIDEO_W, h: int = VIDEO_H) -> np.ndarray:
    """Textured shapes that move from frame to frame (the model sees something different each time)."""
    rng = np.random.default_rng(i)
    image = np.kron(rng.integers(0, 255, (4, 4, 3), dtype=np.uint8), np.ones((h // 4, w // 4, 1), np.uint8))
    image[8:28, (3 * i) % (w - 12) : (3 * i) % (w - 12) + 12] = (230, 40, 90)
    return image


def encode_video(path: Path, codec: str = "libx264", n: int = 12, w: int = VIDEO_W, h: int = VIDEO_H) -> Path:
    """A video of `n` frames at VIDEO_FPS, encoded with PyAV: libx264 in .mp4 (B-frames: decode order ≠
    presentation order), mjpeg in .avi (each packet one JPEG: a damaged one fails alone)."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=VIDEO_FPS)
        s.width, s.height = w, h
        s.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        for i in range(n):
            for p in s.encode(av.VideoFrame.from_ndarray(frame_image(i, w, h), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path
