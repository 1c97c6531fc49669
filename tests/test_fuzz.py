"""A small fuzzer over image bytes and config values (hypothesis, bounded: well under a minute in CI).

Whatever the bytes or values, segcli answers with a result or with its own one-line error — never another
exception, a hang or a large allocation.
"""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
from helpers import no_hang
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from segcli.errors import ConfigError, ImageError
from segcli.io.images import load_image
from segcli.loading.info import Origin
from segcli.loading.sources import read_info
from segcli.model import network_size

FORMATS = ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM"]
MAX_PIXELS = 4_000_000  # a mutated header may claim any size: the limit keeps every decode small
EXAMPLES = int(os.environ.get("SEGCLI_FUZZ_EXAMPLES", "300"))  # ×3 images, ×2 configs: about 20 s on 2 cores


def _seed_images() -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    for fmt in FORMATS:
        for mode in ("RGB", "L", "P"):
            if fmt in ("JPEG", "PPM") and mode == "P":
                continue
            im = Image.fromarray(rng.integers(0, 255, (13, 17, 3), dtype=np.uint8)).convert(mode)
            buf = io.BytesIO()
            im.save(buf, format=fmt)
            out.append(buf.getvalue())
    return out


SEEDS = _seed_images()


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "header"]))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[i] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif data:  # header fields are where sizes and offsets live
            j = min(i, 63)
            data[j : j + 4] = draw(st.binary(min_size=4, max_size=4))
    return bytes(data)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's notes about the broken files it reads
@settings(max_examples=EXAMPLES * 3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutated())
def test_image_bytes(tmp_path, data):
    path = tmp_path / "fuzz.img"
    path.write_bytes(data)
    with no_hang():
        try:
            rgb = load_image(path, max_pixels=MAX_PIXELS)
        except ImageError as e:
            assert str(path) in str(e) and "\n" not in str(e)
        else:
            assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.shape[0] * rgb.shape[1] > 0


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=6),
    max_leaves=20,
)
BOUNDARY_INTS = st.sampled_from([0, -1, 1, 2, 3, 7, 64, 65, 4096, 8193, 65537, 10**9])
CONFIG_KEYS = [
    "num_labels",
    "hidden_size",
    "pool_scales",
    "use_auxiliary_head",
    "auxiliary_in_channels",
    "auxiliary_channels",
    "auxiliary_num_convs",
    "id2label",
    "palette",
    "model_type",
    "backbone_config",
    "backbone_config.depths",
    "backbone_config.hidden_sizes",
    "backbone_config.model_type",
    "backbone_config.out_features",
    "backbone_config.num_stages",
    "backbone_config.hidden_act",
    "segcli",
    "segcli.crop_size",
    "segcli.stride",
    "segcli.resize",
]
PRE_KEYS = ["size", "size.height", "image_mean", "image_std", "rescale_factor", "do_resize", "resample"]


def _set(doc: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        if not isinstance(doc.get(k), dict):
            doc[k] = {}
        doc = doc[k]
    doc[keys[-1]] = value


@pytest.fixture(scope="module")
def configs(tiny_convnext_dir) -> tuple[dict, dict]:
    cfg = json.loads((tiny_convnext_dir / "config.json").read_text())
    pre = json.loads((tiny_convnext_dir / "preprocessor_config.json").read_text())
    return cfg, pre


@settings(max_examples=EXAMPLES * 2, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(CONFIG_KEYS + PRE_KEYS), JSON_VALUES | BOUNDARY_INTS | st.lists(BOUNDARY_INTS, max_size=5)
        ),
        min_size=1,
        max_size=4,
    )
)
def test_config_values(tmp_path, configs, edits):
    cfg, pre = json.loads(json.dumps(configs[0])), json.loads(json.dumps(configs[1]))
    for key, value in edits:
        _set(pre if key in PRE_KEYS else cfg, key, value)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(pre))
    with no_hang():
        try:
            info = read_info(tmp_path / "config.json", tmp_path / "preprocessor_config.json", "fuzz", Origin("local"))
            params, _ = network_size(info.network)  # built on the meta device: sizes, no allocation
            assert params > 0 and len(info.classes) >= 1
        except ConfigError as e:
            assert "config.json" in str(e) and "\n" not in str(e)


def test_the_fuzzer_targets_exist(configs):
    """The seeds decode (so mutations start from real files), and the fuzzed keys that a saved transformers
    config has are spelled as it spells them (the others, like `num_labels` or `segcli`, are added)."""
    for data in SEEDS:
        assert Image.open(io.BytesIO(data)).size == (17, 13)
    cfg, pre = configs
    added = {"num_labels", "palette", "segcli", "segcli.crop_size", "segcli.stride", "segcli.resize"}
    for key in [k for k in CONFIG_KEYS if k not in added] + PRE_KEYS:
        doc = pre if key in PRE_KEYS else cfg
        for part in key.split("."):
            assert part in doc, key
            doc = doc[part] if isinstance(doc[part], dict) else {}


ENTRY = {"seconds": {"torch": 1.0, "compile": 0.5}, "choice": "compile", "notes": {"onnxruntime": "why"}}
CACHE_SEEDS = [
    json.dumps({"k": ENTRY}),  # calibration.json
    json.dumps({"inference": {"backend": "compile"}, "counts": {"done": 1}}),  # summary.json
    json.dumps({"weights": "ab" * 32, "shape": [512, 512], "sha256": "cd" * 32}),  # an export's export.json
    json.dumps({"/x|1|2|3|4": "ef" * 32}),  # verified.json
]


@st.composite
def cache_text(draw) -> bytes:
    """A cache file as segcli writes one, mutated byte-wise; or any JSON value; or deep nesting."""
    kind = draw(st.sampled_from(["mutated", "json", "nested"]))
    if kind == "json":
        return json.dumps(draw(JSON_VALUES)).encode()
    if kind == "nested":
        depth = draw(st.integers(1, 200_000))
        return (draw(st.sampled_from(['{"k":', "["])) * depth).encode()
    data = bytearray(draw(st.sampled_from(CACHE_SEEDS)).encode())
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(data) - 1))
        if draw(st.booleans()):
            data[i] = draw(st.integers(0, 255))
        else:
            data[i:i] = draw(st.sampled_from([b"[", b"{", b'"', b"1e999", b"NaN", b"\xff", b",", b"null"]))
    return bytes(data)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cache_text())
def test_cache_files(tmp_path, monkeypatch, data):
    """calibration.json, summary.json, an export's export.json and verified.json, whatever they hold: read as
    a miss or as entries of the right types, never an exception or a hang."""
    from segcli.backends import calibrate
    from segcli.backends.ort import _intact
    from segcli.batch.request import BACKENDS_KEPT, earlier_backend
    from segcli.loading import hub

    monkeypatch.setenv("SEGCLI_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "export").mkdir(parents=True, exist_ok=True)
    for name in ("calibration.json", "verified.json", "export/export.json"):
        (tmp_path / "cache" / name).write_bytes(data)
    (tmp_path / "cache" / "export" / "model.onnx").write_bytes(b"not a graph")
    (tmp_path / "summary.json").write_bytes(data)
    with no_hang():
        entry = calibrate.lookup("k")
        assert entry is None or calibrate._valid(entry)
        calibrate.store("k2", ENTRY)  # whatever was there: this entry is kept
        assert calibrate.lookup("k2") == ENTRY
        assert earlier_backend(tmp_path, False) in (None, *BACKENDS_KEPT)
        assert _intact(tmp_path / "cache" / "export", {"weights": "ab" * 32}) is False  # the sha256 never matches
        stamps = hub._read_stamps()
        assert all(isinstance(k, str) and len(v) == 64 for k, v in stamps.items())
