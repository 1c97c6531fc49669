"""The authors' own checkpoints: CSAIL's UPerNet / PPM (mit_semseg 1.0.0) and hszhao/semseg's PSPNet.

Reference networks are the authors' code — `mit_semseg` itself (installed from PyPI with --no-deps), and a
transcription of hszhao/semseg (tests/reference/semseg_pspnet.py) — at real sizes with random weights and
randomised BatchNorm statistics, saved in the exact on-disk form of the published files (two plain
state_dicts with the synchronized BN's extra buffers; {"epoch", "state_dict" with "module." keys,
"optimizer"}), converted with `segcli convert` and compared with segcli at a native size (201×265).
The presets `csail` and `semseg` are compared with transcriptions of the authors' test procedures.
"""

from __future__ import annotations

import json
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import random_image, randomize_, run_cli
from PIL import Image

from segcli import Segmenter
from segcli.engine.presets import Protocol, resolve

mit = pytest.importorskip("mit_semseg.models.models", reason="pip install --no-deps mit_semseg==1.0.0")
pytest.importorskip("cv2", reason="opencv-python-headless is not installed (the [test] extra: semseg's cv2 resizing)")
from mit_semseg.models import resnet as mit_resnet  # noqa: E402

SIZE = (201, 265)  # (H - 1) % 8 == 0: a size the semseg network accepts as it is


def _scaled(model: torch.nn.Module, classifier: str, seed: int, logits=None) -> torch.nn.Module:
    """Random weights and BN statistics; the classifier scaled so that the logits `logits(model)` gives on a
    random input have a standard deviation of 2 over the classes (distinct classes, no saturation)."""
    randomize_(model, seed=seed)
    model.eval()
    if logits is not None:
        with torch.no_grad():
            spread = logits(model).std(1).mean().item()
            layer = model.get_submodule(classifier)
            layer.weight.mul_(2.0 / spread)
            layer.bias.mul_(2.0 / spread)
    return model


CSAIL = {  # registry name: (encoder arch, decoder arch, fc_dim, epoch)
    "csail-resnet50-upernet": ("resnet50", "upernet", 2048, 30),
    "csail-resnet101-upernet": ("resnet101", "upernet", 2048, 50),
    "csail-resnet18dilated-ppm-deepsup": ("resnet18dilated", "ppm_deepsup", 512, 20),
    "csail-resnet50dilated-ppm-deepsup": ("resnet50dilated", "ppm_deepsup", 2048, 20),
    "csail-resnet101dilated-ppm-deepsup": ("resnet101dilated", "ppm_deepsup", 2048, 25),
}


def csail_reference(encoder_arch: str, decoder_arch: str, fc_dim: int, seed: int = 0):
    """The authors' encoder and decoder, built as ModelBuilder does (without downloading ImageNet weights)."""
    depth = int(encoder_arch.removeprefix("resnet").removesuffix("dilated"))
    orig = getattr(mit_resnet, f"resnet{depth}")(pretrained=False)
    encoder = mit.ResnetDilated(orig, dilate_scale=8) if encoder_arch.endswith("dilated") else mit.Resnet(orig)
    if decoder_arch == "upernet":
        decoder = mit.UPerNet(num_class=150, fc_dim=fc_dim, use_softmax=False, fpn_dim=512)
        classifier = "conv_last.1"
    else:
        decoder = mit.PPMDeepsup(num_class=150, fc_dim=fc_dim, use_softmax=False)
        classifier = "conv_last.4"
    encoder = randomize_(encoder, seed=seed).eval()
    with torch.no_grad():
        feats = encoder(_input(9)[:, :, :97, :129], return_feature_maps=True)

    def logits(dec):
        out = dec(feats)
        return out[0] if isinstance(out, tuple) else out  # log-softmax: the same spread as the logits

    return encoder, _scaled(decoder, classifier, seed + 1, logits)


def save_csail(encoder, decoder, folder: Path, epoch: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / f"encoder_epoch_{epoch}.pth", folder / f"decoder_epoch_{epoch}.pth"]
    torch.save(encoder.state_dict(), files[0])
    torch.save(decoder.state_dict(), files[1])
    return files


def _convert(files: list[Path], arch: str, out: Path) -> Segmenter:
    r = run_cli("convert", *files, "--arch", arch, "-o", out)
    assert r.exit_code == 0, r.stderr
    return Segmenter.from_pretrained(out)


def _input(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 3, *SIZE, generator=g)


# the numerical parity runs once per architecture: the ResNet-101 entries are their ResNet-50 siblings with
# more blocks per stage, and semseg's datasets differ only in the classifier's rows; every entry's keys and
# shapes are mapped exactly by test_every_entry_maps_the_authors_keys_exactly
CSAIL_PARITY = ["csail-resnet50-upernet", "csail-resnet18dilated-ppm-deepsup", "csail-resnet50dilated-ppm-deepsup"]
SEMSEG_PARITY = ["semseg-pspnet50-ade20k", "semseg-pspnet101-cityscapes"]


@pytest.mark.slow
@pytest.mark.parametrize("name", CSAIL_PARITY)
def test_csail_parity(name, tmp_path):
    encoder_arch, decoder_arch, fc_dim, epoch = CSAIL[name]
    encoder, decoder = csail_reference(encoder_arch, decoder_arch, fc_dim, seed=len(name))
    files = save_csail(encoder, decoder, tmp_path / "ckpt", epoch)
    keys = set(torch.load(files[0], weights_only=True)) | set(torch.load(files[1], weights_only=True))
    assert any(k.endswith("_tmp_running_mean") for k in keys) and any(k.endswith("_running_iter") for k in keys)
    seg = _convert(files[::-1], name, tmp_path / "out")  # decoder first: the order does not matter
    x = _input()
    with torch.no_grad():
        feats = encoder(x, return_feature_maps=True)
        ref = decoder(feats)  # log_softmax of the head's logits (stride 4 or 8)
        ref = ref[0] if isinstance(ref, tuple) else ref
        features = seg.model.features(x)
        ours = F.log_softmax(seg.model.decode_head(features), 1)
        diff = (ours - ref).abs().max().item()
        decoder.use_softmax = True  # the test-time path: logits resized to the image, softmax
        ref_probs = decoder(feats, segSize=SIZE)
        probs_diff = (seg.model(x).softmax(1) - ref_probs).abs().max().item()
    print(
        f"\nCSAIL-PARITY {name}: head log-softmax max|diff| {diff:.2e} (range {ref.min():.1f}..{ref.max():.1f}), "
        f"probabilities at {SIZE[0]}x{SIZE[1]} {probs_diff:.2e}"
    )
    assert diff < 1e-4 and probs_diff < 1e-5
    assert ref.min() < -3 and ref.max() > -2  # the classes are told apart, and not with certainty
    if decoder_arch == "ppm_deepsup":  # the deep-supervision branch is the auxiliary head
        decoder.use_softmax = False
        with torch.no_grad():
            _, deepsup = decoder(feats)
            aux = F.log_softmax(seg.model.auxiliary_head(features), 1)
        assert (aux - deepsup).abs().max().item() < 1e-4


def semseg_reference(layers: int, classes: int, seed: int = 0, blocks=None):
    from reference.semseg_pspnet import PSPNet

    x = _input(9)[:, :, :97, :129]
    return _scaled(PSPNet(layers=layers, classes=classes, blocks=blocks), "cls.4", seed, lambda m: m(x))


def save_semseg(model, path: Path, prefix: str = "module.", optimizer: bool = True) -> Path:
    """As tool/train.py saves (a DataParallel model: "module." keys, with the optimizer state)."""
    doc = {"epoch": 100, "state_dict": {prefix + k: v for k, v in model.state_dict().items()}}
    if optimizer:
        doc["optimizer"] = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9).state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(doc, path)
    return path


SEMSEG = {
    "semseg-pspnet50-ade20k": (50, 150),
    "semseg-pspnet101-ade20k": (101, 150),
    "semseg-pspnet50-voc2012": (50, 21),
    "semseg-pspnet101-voc2012": (101, 21),
    "semseg-pspnet50-cityscapes": (50, 19),
    "semseg-pspnet101-cityscapes": (101, 19),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", SEMSEG_PARITY)
def test_semseg_parity(name, tmp_path):
    layers, classes = SEMSEG[name]
    ref = semseg_reference(layers, classes, seed=len(name))
    seg = _convert([save_semseg(ref, tmp_path / "train_epoch_100.pth")], name, tmp_path / "out")
    x = _input(1)
    with torch.no_grad():
        expected, ours = ref(x), seg.model(x)
        aux_ref, aux = ref.forward_aux(x), seg.model.auxiliary_head(seg.model.features(x))
    diff = (ours - expected).abs().max().item()
    print(
        f"\nSEMSEG-PARITY {name}: logits max|diff| {diff:.2e} (range {expected.min():.1f}..{expected.max():.1f}), "
        f"aux {(aux - aux_ref).abs().max().item():.2e}"
    )
    assert diff < 1e-4 and (aux - aux_ref).abs().max().item() < 1e-4
    assert 4 < expected.max() - expected.min() < 40


# ------------------------------------------------------------------ the authors' test protocols


def _small_semseg(tmp_path: Path, classes: int = 19):
    """A reduced semseg PSPNet (one block per stage), converted: fast enough for protocol tests."""
    ref = semseg_reference(50, classes, seed=7, blocks=[1, 1, 1, 1])
    path = save_semseg(ref, tmp_path / "small" / "train_epoch_1.pth")
    reg = tmp_path / "reg.toml"
    reg.write_text(SMALL_SEMSEG.format(classes="cityscapes" if classes == 19 else "voc2012"))
    r = run_cli("--registry", reg, "convert", path, "--arch", "small-semseg", "-o", tmp_path / "small-out")
    assert r.exit_code == 0, r.stderr
    return ref, Segmenter.from_pretrained(tmp_path / "small-out")


SMALL_SEMSEG = """schema = 1
[models.small-semseg]
download_page = "https://example.org/drive"
files = ["train_epoch_1.pth"]
format = "semseg"
license = "MIT"
dataset = "{classes}"
backbone = {{ type = "resnet", depth = 50, blocks = [1, 1, 1, 1], stem_channels = 128, strides = [1, 2, 1, 1], dilations = [1, 1, 2, 4], contract_dilation = false }}
head = {{ type = "psp", align_corners = true, aux_in_channels = 1024 }}
crop_size = 473
preset = "semseg"
mode = "slide"
stride = 316
resize = "long:512"
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "hw, base, crop, scales",
    [((150, 230), 128, 97, (1.0,)), ((300, 180), 160, 97, (0.5, 1.0, 1.75)), ((64, 300), 200, 97, (1.0,))],
)
def test_semseg_preset_equals_the_test_script(tmp_path, hw, base, crop, scales):
    """Windows larger and smaller than the image (centred mean padding), flips, several scales."""
    from reference.semseg_pspnet import probabilities

    ref, seg = _small_semseg(tmp_path)
    image = random_image(*hw, seed=sum(hw))
    expected = probabilities(ref, image, 19, base, crop, scales)  # [h, w, K] float64
    proto = Protocol(crop, "slide", -(-crop * 2 // 3), True, f"long:{base}")
    params = resolve("semseg-ms" if len(scales) > 1 else "semseg", proto, scales=",".join(map(str, scales)))
    got = seg.run(image, params, logits=True).logits.exp().permute(1, 2, 0).numpy()  # log of averaged probs
    diff = np.abs(got - expected).max()
    print(f"\nSEMSEG-PROTOCOL {hw} base {base} crop {crop} scales {scales}: probabilities max|diff| {diff:.2e}")
    assert diff < 1e-5


def csail_probabilities(model: torch.nn.Module, image: np.ndarray, multiple: int) -> np.ndarray:
    """mit_semseg eval.py / dataset.py for one image: the averaged probabilities [K, H, W]."""
    img = Image.fromarray(image)
    ori_width, ori_height = img.size
    scores = 0
    sizes = (300, 375, 450, 525, 600)
    for this_short_size in sizes:
        scale = min(this_short_size / float(min(ori_height, ori_width)), 1000 / float(max(ori_height, ori_width)))
        target_height, target_width = int(ori_height * scale), int(ori_width * scale)
        target_width = ((target_width - 1) // multiple + 1) * multiple
        target_height = ((target_height - 1) // multiple + 1) * multiple
        resized = np.float32(np.array(img.resize((target_width, target_height), Image.BILINEAR))) / 255.0
        x = (
            torch.from_numpy(resized.transpose(2, 0, 1).copy()) - torch.tensor([0.485, 0.456, 0.406])[:, None, None]
        ) / (torch.tensor([0.229, 0.224, 0.225])[:, None, None])
        with torch.no_grad():
            logits = model(x[None], upsample=False)  # the decoder's 1/4 logits, resized once below
        prob = F.softmax(F.interpolate(logits, (ori_height, ori_width), mode="bilinear", align_corners=False), 1)
        scores = scores + prob / len(sizes)
    return scores[0].numpy()


@pytest.mark.slow
@pytest.mark.parametrize("hw", [(120, 170), (333, 97)])
def test_csail_preset_equals_the_eval_script(tiny_convnext_dir, hw):
    seg = Segmenter.from_pretrained(tiny_convnext_dir)  # the protocol is the model's business: any network
    image = random_image(*hw, seed=hw[0])
    for multiple in (8, 32):
        params = resolve("csail", Protocol(resize=f"300:1000/{multiple}"))
        assert params.scales == (1.0, 1.25, 1.5, 1.75, 2.0) and params.views == 5
        with torch.no_grad():
            expected = csail_probabilities(seg.model, image, multiple)  # it normalises as the model's config says
        got = seg.run(image, params, logits=True).logits.exp().numpy()
        diff = np.abs(got - expected).max()
        print(f"\nCSAIL-PROTOCOL {hw} x{multiple}: probabilities max|diff| {diff:.2e}")
        assert diff < 1e-5


# ------------------------------------------------------------------ files: layout, bad input, download


def test_every_entry_maps_the_authors_keys_exactly():
    """All eleven registry entries: the authors' state dicts (built on the meta device) map onto segcli's
    network key for key and shape, with only the synchronized BN's bookkeeping dropped."""
    from reference.semseg_pspnet import PSPNet

    from segcli.loading.checkpoint import match_state_dict
    from segcli.loading.formats import csail, pth, semseg
    from segcli.loading.registry import load_registry
    from segcli.model import Segmentor

    registry = load_registry()
    for name, (enc_arch, dec_arch, fc_dim, _) in CSAIL.items():
        with torch.device("meta"):
            depth = int(enc_arch.removeprefix("resnet").removesuffix("dilated"))
            orig = getattr(mit_resnet, f"resnet{depth}")(pretrained=False)
            enc = mit.ResnetDilated(orig, 8) if enc_arch.endswith("dilated") else mit.Resnet(orig)
            dec = mit.UPerNet(150, fc_dim, False, fpn_dim=512) if dec_arch == "upernet" else mit.PPMDeepsup(150, fc_dim)
            model = Segmentor(registry[name].network)
        head = "uper" if dec_arch == "upernet" else "psp"
        state = {
            **pth.rename(csail.drop_sync_bn_extras(enc.state_dict()), csail.ENCODER),
            **pth.rename(csail.drop_sync_bn_extras(dec.state_dict()), csail.DECODERS[head]),
        }
        assert set(match_state_dict(model, state, name)) == set(model.state_dict())
    for name, (layers, classes) in SEMSEG.items():
        with torch.device("meta"):
            ref = PSPNet(layers=layers, classes=classes)
            model = Segmentor(registry[name].network)
        state = pth.rename({f"module.{k}": v for k, v in ref.state_dict().items()}, semseg.KEYS)
        assert set(match_state_dict(model, state, name)) == set(model.state_dict())


@pytest.fixture(scope="module")
def r18_files(tmp_path_factory) -> list[Path]:
    encoder, decoder = csail_reference("resnet18dilated", "ppm_deepsup", 512, seed=3)
    return save_csail(encoder, decoder, tmp_path_factory.mktemp("r18"), 20)


def test_csail_bad_inputs(cli, r18_files, tmp_path):
    arch = "csail-resnet18dilated-ppm-deepsup"
    encoder, decoder = r18_files
    for files, message in [
        ([encoder], "a CSAIL model is two files"),
        ([encoder, encoder], "are both CSAIL encoders"),
        ([decoder, decoder], "are both CSAIL decoders"),
    ]:
        r = cli("convert", *files, "--arch", arch, "-o", tmp_path / "x")
        assert r.exit_code == 2 and message in r.stderr and r.stderr.count("\n") == 1, r.stderr
    other = save_semseg(semseg_reference(50, 150, blocks=[1, 1, 1, 1]), tmp_path / "train_epoch_100.pth")
    r = cli("convert", encoder, other, "--arch", arch, "-o", tmp_path / "x")
    assert r.exit_code == 2 and "not a CSAIL encoder or decoder" in r.stderr
    r = cli("convert", other, "--arch", arch, "-o", tmp_path / "x")
    assert r.exit_code == 2 and "a CSAIL model is two files" in r.stderr
    r = cli("convert", *r18_files, "--arch", "semseg-pspnet50-ade20k", "-o", tmp_path / "x")
    assert r.exit_code == 2 and "a semseg checkpoint is one file" in r.stderr
    r = cli("convert", *r18_files, "--arch", "csail-resnet50dilated-ppm-deepsup", "-o", tmp_path / "x")
    assert r.exit_code == 2 and "do not match the architecture" in r.stderr  # an R18 given as an R50


def test_csail_conversion_is_byte_identical_in_either_order(cli, r18_files, tmp_path):
    arch = "csail-resnet18dilated-ppm-deepsup"
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli("convert", *r18_files, "--arch", arch, "-o", a).exit_code == 0
    assert cli("convert", *r18_files[::-1], "--arch", arch, "-o", b).exit_code == 0
    for f in ("model.safetensors", "config.json"):
        assert (a / f).read_bytes() == (b / f).read_bytes()
    config = json.loads((a / "config.json").read_text())
    assert config["source"]["files"] == ["decoder_epoch_20.pth", "encoder_epoch_20.pth"]
    assert config["segcli"]["preset"] == "csail" and Segmenter.from_pretrained(a).params().preset == "csail"


@pytest.mark.parametrize("prefix, optimizer", [("module.", False), ("", True), ("", False)])
@pytest.mark.slow  # a real-size PSPNet
def test_semseg_files_without_optimizer_or_prefix_are_accepted(cli, tmp_path, prefix, optimizer):
    ref = semseg_reference(50, 19, seed=5, blocks=[1, 1, 1, 1])
    path = save_semseg(ref, tmp_path / "ckpt.pth", prefix=prefix, optimizer=optimizer)
    reg = tmp_path / "reg.toml"
    reg.write_text(SMALL_SEMSEG.format(classes="cityscapes"))
    r = cli("--registry", reg, "convert", path, "--arch", "small-semseg", "-o", tmp_path / "out")
    assert r.exit_code == 0, r.stderr
    seg = Segmenter.from_pretrained(tmp_path / "out")
    x = _input(2)
    with torch.no_grad():
        assert (seg.model(x) - ref(x)).abs().max().item() < 1e-4


@pytest.mark.slow  # a real-size checkpoint
def test_download_fetches_both_csail_files_and_semseg_explains(cli, r18_files, tmp_path, monkeypatch):
    served = tmp_path / "www" / "ade20k-resnet18dilated-ppm_deepsup"
    served.mkdir(parents=True)
    for f in r18_files:
        (served / f.name).write_bytes(f.read_bytes())
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(served.parent)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        from segcli.loading.registry import builtin_registry_path

        text = builtin_registry_path().read_text()
        text = text.replace(
            "http://sceneparsing.csail.mit.edu/model/pytorch", f"http://127.0.0.1:{server.server_address[1]}"
        )
        reg = tmp_path / "reg.toml"
        reg.write_text(text)
        monkeypatch.setenv("SEGCLI_REGISTRY", str(reg))
        r = cli("download", "csail-resnet18dilated-ppm-deepsup")
        assert r.exit_code == 0, r.stderr
        seg = Segmenter.from_pretrained("csail-resnet18dilated-ppm-deepsup")
        assert seg.info.origin.kind == "converted" and seg.params().preset == "csail"
        photo = tmp_path / "x.png"
        Image.fromarray(random_image(60, 80)).save(photo)
        assert seg.predict(photo).shape == (60, 80)
    finally:
        server.shutdown()
        server.server_close()
    r = cli("download", "semseg-pspnet50-ade20k")
    assert r.exit_code == 2 and "cannot be downloaded automatically" in r.stderr
    assert (
        "drive.google.com" in r.stderr
        and "segcli convert train_epoch_100.pth --arch semseg-pspnet50-ade20k" in r.stderr
    )
    r = cli("predict", photo, "-m", "semseg-pspnet50-ade20k", "-o", tmp_path / "out")
    assert r.exit_code == 2 and "not converted yet" in r.stderr and "by hand" in r.stderr
