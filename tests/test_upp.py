"""Unified perceptual parsing (CSAILVision/unifiedparsing `upp-resnet50-upernet`).

* The bundled classes equal the authors' CSV files (tests/data/unifiedparsing, read as their
  `restore_csv` reads them).
* PrRoIPool equals a brute-force numerical integration of the interpolated surface and closed forms worked
  out by hand; it exports to ONNX.
* The network equals a transcription of the authors' `UPerNet` (tests/reference/upp.py: their code, with a
  port of the CUDA PrRoI kernel) on mit_semseg's ResNet-50, at real size with random weights and BatchNorm
  statistics, saved as the two published files and converted with `segcli convert`.
* The `upp` preset equals a transcription of their `test.py`.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import DATA, assert_labels_agree, random_image, randomize_

from segcli import Segmenter
from segcli.loading.classes import head_sets, known_set, parsing_head
from segcli.model.heads.ppm import PrRoIPool, prroi_matrix

mit = pytest.importorskip("mit_semseg.models.models", reason="pip install --no-deps mit_semseg==1.0.0")
from mit_semseg.models import resnet as mit_resnet  # noqa: E402
from reference import upp as ref  # noqa: E402

UPP_DATA = DATA / "unifiedparsing"
ARCH = "upp-resnet50-upernet"


def restore_csv(name: str) -> list[list[str]]:
    """broden_dataset_utils/joint_dataset.py `restore_csv`: rows after the header."""
    with open(UPP_DATA / name, newline="") as f:
        rows = list(csv.reader(f))
    return rows[1:]


def hierarchy() -> list[tuple[int, list[int]]]:
    return [(int(r[0]), [int(i) for i in r[2].split(";")]) for r in restore_csv("object_part_hierarchy.csv")]


# ------------------------------------------------------------------ classes


def test_bundled_classes_are_the_authors_files():
    names = {k: [r[1] for r in restore_csv(f"{k}.csv")] for k in ("object", "part", "material", "scene")}
    assert [len(v) for v in names.values()] == [336, 153, 26, 365]
    assert list(known_set("unifiedparsing").classes) == names["object"]
    sets = head_sets("unifiedparsing")
    for head in ("part", "material", "scene"):
        assert list(sets[head].classes) == names[head]
    head = parsing_head("unifiedparsing")
    groups = [(g["object"], g["parts"]) for g in head["part_groups"]]
    assert groups == hierarchy()
    assert (head["part_classes"], head["material_classes"], head["scene_classes"]) == (153, 26, 365)
    # the part head's channel layout (unifiedparsing test.py: groups concatenated in the file's order)
    starts = np.cumsum([0] + [len(p) for _, p in groups])
    assert len(groups) == 77 and starts[-1] == 427
    layout = {names["object"][o]: (int(starts[i]), int(starts[i + 1]) - 1) for i, (o, _) in enumerate(groups)}
    assert layout["sky"] == (0, 1) and layout["building"] == (2, 25) and layout["person"] == (26, 40)
    assert layout["lighthouse"] == (425, 426)
    assert all(parts[0] == 0 for _, parts in groups)  # every group starts with its "-"


# ------------------------------------------------------------------ PrRoIPool


def _surface_integral(x: np.ndarray, y0: float, y1: float, x0: float, x1: float, n: int = 400) -> float:
    """Midpoint rule on an n×n grid over the bin, of the bilinear interpolation of x (values at integer
    points, zero outside the map)."""
    h, w = x.shape
    ys = y0 + (np.arange(n) + 0.5) * (y1 - y0) / n
    xs = x0 + (np.arange(n) + 0.5) * (x1 - x0) / n
    padded = np.zeros((h + 3, w + 3))
    padded[1 : h + 1, 1 : w + 1] = x  # index i + 1 holds pixel i; pixels -1, h, h+1 are zero
    yi, xi = np.floor(ys).astype(int), np.floor(xs).astype(int)
    fy, fx = ys - yi, xs - xi
    yi, xi = np.clip(yi, -1, h) + 1, np.clip(xi, -1, w) + 1
    top = padded[yi][:, xi] * (1 - fx) + padded[yi][:, xi + 1] * fx
    bottom = padded[yi + 1][:, xi] * (1 - fx) + padded[yi + 1][:, xi + 1] * fx
    values = top * (1 - fy)[:, None] + bottom * fy[:, None]
    return float(values.mean())  # the integral divided by the bin's area


@pytest.mark.parametrize("hw", [(5, 7), (13, 10), (1, 3), (4, 4), (19, 25)])
@pytest.mark.parametrize("s", [1, 2, 3, 6])
def test_prroi_pool_is_the_integral_of_the_interpolated_map(hw, s):
    x = np.random.default_rng(hw[0] * 31 + s).standard_normal(hw)
    got = PrRoIPool(s)(torch.from_numpy(x)[None, None].float())[0, 0].double().numpy()
    h, w = hw
    expected = np.array(
        [
            [_surface_integral(x, p * h / s, (p + 1) * h / s, q * w / s, (q + 1) * w / s) for q in range(s)]
            for p in range(s)
        ]
    )
    assert got.shape == (s, s)
    assert np.abs(got - expected).max() <= 1e-4


@pytest.mark.parametrize(
    ("length", "bins", "expected"),
    [
        (4, 2, [1.0, 0.75]),  # last bin [2, 4]: 1 on [2, 3], then 1 → 0 on [3, 4]: (1 + 0.5) / 2
        (13, 1, [1 - 1 / 26]),  # one bin of 13: loses half of the last cell
        (12, 3, [1.0, 1.0, 1 - 1 / 8]),
        (3, 6, [1.0, 1.0, 1.0, 1.0, 0.75, 0.25]),  # bins of 1/2: [2, 2.5] averages 0.75, [2.5, 3] 0.25
    ],
)
def test_prroi_pool_of_a_constant_map_loses_the_far_half_cell(length, bins, expected):
    out = PrRoIPool(bins)(torch.ones(1, 2, length, length, dtype=torch.float64))
    e = torch.tensor(expected, dtype=torch.float64)
    assert torch.allclose(out[0, 1], e[:, None] * e[None, :], atol=1e-12)
    assert torch.allclose(prroi_matrix(length, bins, torch.float64).sum(1), e, atol=1e-12)


@pytest.mark.parametrize("hw", [(10, 13), (19, 25), (4, 3)])
def test_prroi_pool_equals_a_port_of_the_cuda_kernel(hw):
    x = torch.randn(2, 5, *hw, generator=torch.Generator().manual_seed(hw[0]))
    rois = torch.tensor([[i, 0, 0, hw[1], hw[0]] for i in range(2)], dtype=torch.float32)
    for s in (1, 2, 3, 6):
        assert torch.allclose(PrRoIPool(s)(x), ref.prroi_pool2d(x, rois, s, s, 1.0), atol=2e-6)


def test_prroi_pool_exports_to_onnx(tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the [onnx] extra)")
    module = torch.nn.Sequential(PrRoIPool(6)).eval()
    x = torch.randn(1, 8, 10, 13)
    path = tmp_path / "prroi.onnx"
    torch.onnx.export(module, (x,), str(path), input_names=["x"], output_names=["y"], dynamo=True, verbose=False)
    got = ort.InferenceSession(str(path)).run(None, {"x": x.numpy()})[0]
    rois = torch.tensor([[0, 0, 0, 13, 10]], dtype=torch.float32)
    assert np.abs(got - ref.prroi_pool2d(x, rois, 6, 6, 1.0).numpy()).max() < 2e-6


# ------------------------------------------------------------------ the network


NR = {"scene": 365, "object": 336, "part": 427, "material": 26}
HEADS = {"object": "object_head.1", "material": "material_head.1", "part": "part_head.1", "scene": "scene_head.2"}
REAL = (304, 400)  # test.py's first input for a 512×683 image (ADE_val_00000001): short side 300, ×8


def upp_reference(seed: int = 0, small: bool = False):
    """The authors' encoder (mit_semseg's Resnet(resnet50), as unifiedparsing's) and decoder, with random
    weights and BN statistics; each head's classifier scaled so its logits spread by 2 over its classes.
    `small`: their ResNet class with basic blocks, one per stage, and a 32-channel decoder (protocol tests)."""
    if small:
        encoder = mit.Resnet(mit_resnet.ResNet(mit_resnet.BasicBlock, [1, 1, 1, 1]))
        decoder = ref.Decoder(NR, hierarchy(), fc_dim=512, fpn_inplanes=(64, 128, 256, 512), fpn_dim=32, ppm_dim=32)
    else:
        encoder, decoder = mit.Resnet(mit_resnet.resnet50(pretrained=False)), ref.Decoder(NR, hierarchy())
    encoder, decoder = randomize_(encoder, seed=seed).eval(), randomize_(decoder, seed=seed + 1).eval()
    with torch.no_grad():
        out = decoder.logits(
            encoder(torch.randn(1, 3, 160, 224, generator=torch.Generator().manual_seed(5)) * 60, True)
        )
        for head, layer in HEADS.items():
            spread = out[head].std(1).mean().item() if head != "scene" else out[head].std().item()
            conv = decoder.get_submodule(layer)
            conv.weight.mul_(2.0 / spread)
            conv.bias.mul_(2.0 / spread)
    return encoder, decoder


def _converted(cli, folder, small: bool):
    encoder, decoder = upp_reference(seed=13, small=small)
    files = [folder / "encoder_epoch_40.pth", folder / "decoder_epoch_40.pth"]
    torch.save(encoder.state_dict(), files[0])
    torch.save(decoder.state_dict(), files[1])
    arch = ["--registry", _small_registry(folder), "convert", *files, "--arch", "small-upp"] if small else None
    r = cli(*(arch or ["convert", *files, "--arch", ARCH]), "-o", folder / "converted")
    assert r.exit_code == 0, r.stderr
    return encoder, decoder, folder / "converted"


def _small_registry(folder):
    """upp-resnet50-upernet's entry with the small network (`upp_reference(small=True)`)."""
    path = folder / "small.toml"
    path.write_text(
        """schema = 1
[models.small-upp]
download_page = "https://example.org/drive"
files = ["encoder_epoch_40.pth", "decoder_epoch_40.pth"]
format = "csail"
license = "MIT"
dataset = "unifiedparsing"
backbone = { type = "resnet", depth = 18, stem_channels = 128, blocks = [1, 1, 1, 1] }
head = { type = "upp", channels = 32 }
preprocess = { mean = [102.9801, 115.9465, 122.7717], std = [1.0, 1.0, 1.0], scale = 1.0, bgr = true }
crop_size = 512
preset = "upp"
resize = "300:1000/8"
"""
    )
    return path


@pytest.fixture(scope="module")
def upp_files(cli, tmp_path_factory):
    """The real-size parser, converted from the authors' two files."""
    return _converted(cli, tmp_path_factory.mktemp("upp"), small=False)


@pytest.fixture(scope="module")
def small_upp_files(cli, tmp_path_factory):
    """The same with the small network: the protocol's assertions hold at any width."""
    return _converted(cli, tmp_path_factory.mktemp("small-upp"), small=True)


def _bgr_input(image: np.ndarray) -> torch.Tensor:
    """test.py's network input for an RGB image already at the input size: BGR minus the Caffe means."""
    x = torch.from_numpy(image[:, :, ::-1].astype(np.float32).transpose(2, 0, 1).copy())
    return (x - torch.tensor(ref.MEAN_BGR)[:, None, None])[None]


@pytest.mark.slow
def test_upp_network_equals_the_authors(upp_files):
    encoder, decoder, converted = upp_files
    seg = Segmenter.from_pretrained(converted)
    assert seg.maps == ("part", "material") and len(seg.scenes) == 365 and seg.num_classes == 336
    image = random_image(*REAL, seed=3)
    with torch.no_grad():
        features = encoder(_bgr_input(image), return_feature_maps=True)  # the authors' encoder, once
        expected, probs = decoder.logits(features), decoder(features, REAL)
        pixels, scene = seg.model(seg.model.normalize(torch.from_numpy(image).permute(2, 0, 1)[None].float()), False)
    obj, mat = pixels[:, :336], pixels[:, 336:362]
    diffs = {
        "object": (obj - expected["object"]).abs().max().item(),
        "material": (mat - expected["material"]).abs().max().item(),
        "scene": (scene.softmax(1) - probs["scene"]).abs().max().item(),
    }
    print(f"\nUPP parity {REAL}: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    assert obj.shape[-2:] == (76, 100) and diffs["object"] <= 1e-4 and diffs["material"] <= 1e-4
    assert diffs["scene"] <= 1e-5
    # part labels: the group of the object predicted at each pixel, read at the image's size
    up = F.interpolate(pixels, REAL, mode="bilinear", align_corners=False)[0]
    maps = seg.model.heads.labels(up)
    object_map = probs["object"].argmax(1)[0].numpy()
    local = [p.argmax(1)[0].numpy() for p in probs["part"]]
    # the probabilities agree to ~1e-5: labels equal but at the near-ties bilinear upsampling makes
    assert_labels_agree(maps["labels"], probs["object"][0].numpy(), 1e-4, "object")
    assert_labels_agree(maps["material"], probs["material"][0].numpy(), 1e-4, "material")
    same_object = maps["labels"] == object_map
    parts = ref.global_parts(object_map, local, hierarchy())
    assert np.mean(maps["part"][same_object] != parts[same_object]) <= 1e-3  # a part's own near-ties
    assert len(np.unique(maps["part"])) > 5  # the comparison covers many parts, not just "no part"


def _segcli_resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """cv2.resize's call form (size as (w, h)), by segcli's uint8 bilinear resampling."""
    from segcli.engine.resample import resize_bilinear

    return resize_bilinear(np.ascontiguousarray(img), (size[1], size[0]))


@pytest.mark.slow
def test_upp_preset_equals_the_test_script(small_upp_files):
    encoder, decoder, converted = small_upp_files
    seg = Segmenter.from_pretrained(converted)
    image = random_image(150, 200, seed=11)  # inputs 304×400, 400×536, 504×672, 600×800
    params = seg.params()
    assert params.preset == "upp" and params.views == 4 and params.resize_once
    # test.py resizes with cv2 (11-bit fixed point); segcli's uint8 bilinear rounds exactly: ±1 grey level
    bgr = np.ascontiguousarray(image[:, :, ::-1])
    ours, theirs = _segcli_resize(bgr, (400, 304)), ref._cv2_resize(bgr, (400, 304))
    level = np.abs(ours.astype(int) - theirs.astype(int))
    print(f"\nUPP resize vs cv2: max {level.max()} level, {np.mean(level > 0):.4f} of values differ")
    assert level.max() <= 1
    probs, labels = ref.test_py(encoder, decoder, image, resize=_segcli_resize)
    got = seg.run(image, params, logits=True)
    diffs = {
        "object": np.abs(got.logits.exp().numpy() - probs["object"][0].numpy()).max(),
        "scene": np.abs(got.image_probs - probs["scene"][0].numpy()).max(),
    }
    print("UPP protocol: " + ", ".join(f"{k} probabilities {v:.2e}" for k, v in diffs.items()))
    assert diffs["object"] <= 1e-5 and diffs["scene"] <= 1e-5
    assert_labels_agree(got.labels, probs["object"][0].numpy(), 1e-5, "object")
    assert_labels_agree(got.maps["material"], probs["material"][0].numpy(), 1e-5, "material")
    same_object = got.labels == labels["object"]
    parts = ref.global_parts(labels["object"], labels["part"], hierarchy())
    assert np.mean(got.maps["part"][same_object] != parts[same_object]) <= 1e-3
    parsed = seg.parse(image)
    assert np.array_equal(parsed.object, got.labels) and np.array_equal(parsed.part, got.maps["part"])
    names = [r[1] for r in restore_csv("scene.csv")]
    top = np.argsort(-probs["scene"][0].numpy())[:5]
    assert [name for name, _ in parsed.scene] == [names[i] for i in top]
    assert [p for _, p in parsed.scene] == pytest.approx(probs["scene"][0].numpy()[top].tolist(), abs=1e-5)
