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
