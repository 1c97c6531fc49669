"""mmsegmentation checkpoints → segcli: parity with mmseg's own modules, conversion errors, download+convert.

Random-weight mmseg models (ResNetV1c with PSPHead / UPerHead and the auxiliary FCNHead, BatchNorm
statistics randomised) are saved in mmseg's checkpoint format ({"meta", "state_dict"}), converted with
`segcli convert` and loaded through `Segmenter.from_pretrained`: logits within 1e-4 at fp32.
"""

from __future__ import annotations

import hashlib
import json
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from helpers import ADE_CLASSES, random_image, randomize_
from mmseg_ref import import_mmseg
from PIL import Image

from segcli import Segmenter
from segcli.errors import CheckpointError

BN = dict(type="BN", requires_grad=True)


def mmseg_model(
    kind: str,
    depth: int = 50,
    num_classes: int = 150,
    align_corners: bool = False,
    multi_grid: tuple[int, ...] | None = None,
    channels: int = 512,
):
    import_mmseg()
    from mmseg.registry import MODELS

    dilated = kind == "psp"
    c = 64 if depth in (18, 34) else 256  # the first stage's output channels
    backbone = dict(
        type="ResNetV1c",
        depth=depth,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        dilations=(1, 1, 2, 4) if dilated else (1, 1, 1, 1),
        strides=(1, 2, 1, 1) if dilated else (1, 2, 2, 2),
        norm_cfg=BN,
        norm_eval=False,
        style="pytorch",
        contract_dilation=True,
        multi_grid=multi_grid,
    )
    common = dict(dropout_ratio=0.1, num_classes=num_classes, norm_cfg=BN, align_corners=align_corners)
    if kind == "psp":
        head = dict(
            type="PSPHead", in_channels=8 * c, in_index=3, channels=channels, pool_scales=(1, 2, 3, 6), **common
        )
    else:
        head = dict(
            type="UPerHead",
            in_channels=[c, 2 * c, 4 * c, 8 * c],
            in_index=[0, 1, 2, 3],
            pool_scales=(1, 2, 3, 6),
            channels=channels,
            **common,
        )
    aux = dict(
        type="FCNHead", in_channels=4 * c, in_index=2, channels=channels // 2, num_convs=1, concat_input=False, **common
    )
    model = MODELS.build(
        dict(
            type="EncoderDecoder", backbone=backbone, decode_head=head, auxiliary_head=aux, test_cfg=dict(mode="whole")
        )
    )
    randomize_(model, seed=depth + len(kind))
    model.eval()
    return model


def save_mmseg(model, path: Path) -> Path:
    torch.save({"meta": {"CLASSES": ADE_CLASSES, "mmseg_version": "1.2.2"}, "state_dict": model.state_dict()}, path)
    return path


CASES = {
    "pspnet-r50-d8": ("psp", 50, "pspnet-r50-d8-ade20k", 150, False),
    "pspnet-r101-d8": ("psp", 101, "pspnet-r101-d8-ade20k", 150, False),
    "upernet-r50": ("uper", 50, "upernet-r50-ade20k", 150, False),
    "pspnet-r50-d8-cityscapes": ("psp", 50, "pspnet-r50-d8-cityscapes", 19, True),
}


def _mmseg_logits(mm, x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    with torch.no_grad():  # backbone → decode head → resize to the input (align_corners)
        return mm.encode_decode(x, [dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w))])


CONVENTION = """[models.{name}]
url = "https://example.org/{name}.pth"
license = "Apache-2.0"
dataset = "ade20k"
backbone = {{ type = "resnet", depth = {depth}, strides = [1, 2, 1, 1], dilations = [1, 1, 2, 4]{extra} }}
head = {{ type = "psp", channels = 64, aux_in_channels = {aux}, aux_channels = 32 }}
crop_size = 512
preset = "mmseg"
"""


@pytest.mark.parametrize(
    "depth, multi_grid, extra, equal",
    [
        (18, None, "", True),  # mmseg's BasicBlock: only conv1 dilated (its convention, from format = mmseg)
        (34, None, "", True),
        (18, None, ", dilate_conv2 = true", False),  # the CSAIL rule on mmseg weights: another network
        (50, (1, 2, 4), ", multi_grid = [1, 2, 4]", True),  # the last stage's blocks at dilations 1, 2, 4
        (18, (2, 4), ", multi_grid = [2, 4]", True),
    ],
)
def test_mmseg_conventions_that_shapes_do_not_show(cli, tmp_path, depth, multi_grid, extra, equal):
    """A basic block's dilation and `multi_grid` change the computation but no shape: segcli computes what the
    entry (with mmseg's conventions as defaults) describes, and the difference is real."""
    mm = mmseg_model("psp", depth, multi_grid=multi_grid, channels=64)
    reg = tmp_path / "reg.toml"
    aux = 256 if depth < 50 else 1024
    reg.write_text(CONVENTION.format(name="m", depth=depth, extra=extra, aux=aux))
    r = cli("--registry", reg, "convert", save_mmseg(mm, tmp_path / "m.pth"), "--arch", "m", "-o", tmp_path / "out")
    assert r.exit_code == 0, r.stderr
    seg = Segmenter.from_pretrained(tmp_path / "out")
    x = torch.randn(1, 3, 97, 131, generator=torch.Generator().manual_seed(2))
    ref = _mmseg_logits(mm, x)
    with torch.no_grad():
        diff = (seg.model(x) - ref).abs().max().item()
    assert ref.std() > 0.1
    assert (diff <= 1e-4) is equal, diff


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_converted_checkpoint_matches_mmseg(cli, case, tmp_path):
    kind, depth, arch, k, align = CASES[case]
    mm = mmseg_model(kind, depth, k, align)
    pth = save_mmseg(mm, tmp_path / f"{case}.pth")
    r = cli("convert", pth, "--arch", arch, "-o", tmp_path / "out")
    assert r.exit_code == 0, r.stderr
    seg = Segmenter.from_pretrained(r.stdout.strip())
    assert seg.model.align_corners is align and seg.num_classes == k
    x = torch.randn(1, 3, 200, 264, generator=torch.Generator().manual_seed(1))
    metas = [dict(img_shape=(200, 264), ori_shape=(200, 264), pad_shape=(200, 264))]
    with torch.no_grad():
        ref = mm.encode_decode(x, metas)  # backbone → decode head → resize to the input (align_corners)
        ours = seg.model(x)
        feats = mm.extract_feat(x)
        aux_ref = torch.nn.functional.interpolate(
            mm.auxiliary_head(feats), size=(200, 264), mode="bilinear", align_corners=align
        )
        aux = seg.model.forward_aux(x)
    diff, aux_diff = (ours - ref).abs().max().item(), (aux - aux_ref).abs().max().item()
    print(
        f"\nMMSEG-PARITY {case}: logits max|diff| {diff:.2e} (range {ref.min():.1f}..{ref.max():.1f}), aux {aux_diff:.2e}"
    )
    assert ref.std() > 0.1 and len(ref.argmax(1).unique()) > 3  # a non-degenerate random model
    assert diff <= 1e-4 and aux_diff <= 1e-4


@pytest.fixture(scope="module")
def psp_pth(tmp_path_factory) -> Path:
    return save_mmseg(mmseg_model("psp", 50), tmp_path_factory.mktemp("mm") / "pspnet_r50.pth")


@pytest.mark.slow  # a real-size checkpoint
def test_conversion_is_byte_identical_and_loads(cli, psp_pth, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli("convert", psp_pth, "--arch", "pspnet-r50-d8-ade20k", "-o", a).exit_code == 0
    assert cli("convert", psp_pth, "--arch", "pspnet-r50-d8-ade20k", "-o", b).exit_code == 0
    for f in ("model.safetensors", "config.json"):
        assert (a / f).read_bytes() == (b / f).read_bytes()
    cfg = json.loads((a / "config.json").read_text())
    assert cfg["format"] == "segcli/1" and cfg["architecture"] == "pspnet" and cfg["head"]["type"] == "psp"
    assert cfg["segcli"]["preset"] == "mmseg" and cfg["id2label"]["7"] == "bed "
    assert cfg["source"]["sha256"] == hashlib.sha256(psp_pth.read_bytes()).hexdigest()
    seg = Segmenter.from_pretrained(a)
    assert seg.classes[:2] == ["wall", "building"] and seg.params().preset == "mmseg" and seg.params().mode == "whole"
    labels = seg.predict(random_image(60, 80))
    assert labels.shape == (60, 80)


def test_wrong_arch_is_a_key_error(cli, psp_pth, tmp_path):
    r = cli("convert", psp_pth, "--arch", "upernet-r50-ade20k", "-o", tmp_path / "o")
    assert r.exit_code == 2
    assert "weights do not match the architecture" in r.stderr and "missing: decode_head.fpn_bottleneck" in r.stderr
    assert not (tmp_path / "o" / "model.safetensors").exists()


def test_missing_keys_are_listed(cli, psp_pth, tmp_path):
    state = torch.load(psp_pth, weights_only=True)
    del state["state_dict"]["backbone.layer4.2.conv3.weight"], state["state_dict"]["decode_head.bottleneck.bn.weight"]
    torch.save(state, tmp_path / "partial.pth")
    r = cli("convert", tmp_path / "partial.pth", "--arch", "pspnet-r50-d8-ade20k", "-o", tmp_path / "o")
    assert r.exit_code == 2 and "2 missing" in r.stderr
    assert "backbone.layer4.2.conv3.weight" in r.stderr and "decode_head.bottleneck.batch_norm.weight" in r.stderr


def test_truncated_checkpoint(cli, psp_pth, tmp_path):
    bad = tmp_path / "cut.pth"
    bad.write_bytes(psp_pth.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=r"cut\.pth: not a readable PyTorch checkpoint"):
        from segcli.loading.formats.mmseg import read_pth

        read_pth(bad)
    r = cli("convert", bad, "--arch", "pspnet-r50-d8-ade20k", "-o", tmp_path / "o")
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1


class _Payload:
    """Unpickling this runs code: it would create the file named in the test."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_a_pickle_that_needs_code_execution_is_refused(cli, tmp_path):
    marker = tmp_path / "code-ran"
    torch.save({"meta": {"hook": _Payload(str(marker))}, "state_dict": {"x": torch.zeros(1)}}, tmp_path / "evil.pth")
    r = cli("convert", tmp_path / "evil.pth", "--arch", "pspnet-r50-d8-ade20k", "-o", tmp_path / "o")
    assert r.exit_code == 2
    assert "refusing to unpickle" in r.stderr and "weights_only=True" in r.stderr
    assert not marker.exists()  # nothing in the file was executed


def test_unknown_arch_and_class_count(cli, psp_pth, tmp_path):
    r = cli("convert", psp_pth, "--arch", "pspnet-r18", "-o", tmp_path / "o")
    assert r.exit_code == 2 and "unknown --arch 'pspnet-r18'" in r.stderr and "pspnet-r50-d8-ade20k" in r.stderr
    r = cli("convert", psp_pth, "--arch", "pspnet-r50-d8-cityscapes", "-o", tmp_path / "o")
    assert r.exit_code == 2 and "has 150 classes, cityscapes has 19" in r.stderr and "--classes" in r.stderr
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"c{i}" for i in range(150)))
    r = cli("convert", psp_pth, "--arch", "pspnet-r50-d8-cityscapes", "--classes", names, "-o", tmp_path / "o")
    assert r.exit_code == 0, r.stderr
    assert Segmenter.from_pretrained(tmp_path / "o").classes[149] == "c149"


@pytest.mark.slow  # a real-size checkpoint
def test_models_state_and_download_then_convert(cli, psp_pth, tmp_path, monkeypatch):
    digest = hashlib.sha256(psp_pth.read_bytes()).hexdigest()
    served = tmp_path / "www"
    served.mkdir()
    name = f"pspnet_r50-d8_test-{digest[:8]}.pth"
    (served / name).write_bytes(psp_pth.read_bytes())
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{name}"
        from segcli.loading.registry import builtin_registry_path

        entry = builtin_registry_path().read_text().split("[models.pspnet-r50-d8-ade20k]")[1].split("\n\n")[0]
        entry = entry.replace(entry.split("url = ")[1].split("\n")[0], f'"{url}"')
        entry = entry.replace('sha256_prefix = "1890b0bd"', f'sha256_prefix = "{digest[:8]}"')
        reg = tmp_path / "reg.toml"
        reg.write_text("[models.psp-local]" + entry + "\n")
        monkeypatch.setenv("SEGCLI_REGISTRY", str(reg))

        rows = {m["name"]: m for m in json.loads(cli("models", "--json").stdout)}
        assert rows["psp-local"]["state"] == "needs conversion"
        Image.fromarray(random_image(40, 56)).save(tmp_path / "img.png")
        r = cli("predict", tmp_path / "img.png", "-m", "psp-local", "-o", tmp_path / "p")
        assert r.exit_code == 2 and "segcli download psp-local" in r.stderr and "segcli convert" in r.stderr

        r = cli("download", "psp-local")
        assert r.exit_code == 0, r.stderr
        out_dir = Path(r.stdout.split("\t")[1]).parent
        assert (out_dir / "config.json").is_file()
        assert json.loads(cli("models", "--json").stdout)[-1]["state"] == "ready"
        r = cli("predict", tmp_path / "img.png", "-m", "psp-local", "-o", tmp_path / "p", "--jsonl")
        assert r.exit_code == 0, r.stderr
        assert json.loads(r.stdout)["model"]["source"] == "converted"

        reg.write_text(reg.read_text().replace(f'sha256_prefix = "{digest[:8]}"', 'sha256_prefix = "00000000"'))
        r = cli("download", "psp-local", "--force")
        assert r.exit_code == 2 and "does not start with 00000000" in r.stderr
    finally:
        server.shutdown()
        server.server_close()


def test_download_without_network_prints_the_commands(cli, monkeypatch, tmp_path):
    reg = tmp_path / "reg.toml"
    from segcli.loading.registry import builtin_registry_path

    entry = builtin_registry_path().read_text().split("[models.upernet-r50-ade20k]")[1].split("\n\n")[0]
    entry = entry.replace("https://download.openmmlab.com", "http://127.0.0.1:9")
    reg.write_text("[models.uper-offline]" + entry + "\n")
    r = cli("--registry", reg, "download", "uper-offline")
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    name = "upernet_r50_512x512_160k_ade20k_20200615_184328-8534de8d.pth"
    assert lines[0].startswith("segcli: error:") and "download failed" in lines[0]
    assert lines[1] == "  where the URL is reachable:"  # then the commands, one per line, the URL once
    assert lines[2].startswith(f"    curl -L -o {name} http://127.0.0.1:9/") and lines[2].count("http") == 1
    assert lines[3].startswith(f"    segcli convert {name} --arch uper-offline -o ")
    assert len(lines) == 4 and all(len(line) < 250 for line in lines)


@pytest.mark.parametrize(
    "arch",
    [
        "pspnet-r50-d8-ade20k",
        "pspnet-r101-d8-ade20k",
        "upernet-r50-ade20k",
        "upernet-r101-ade20k",
        "pspnet-r50-d8-cityscapes",
        "pspnet-r101-d8-cityscapes",
    ],
)
def test_every_mmseg_entry_has_mmseg_s_layout(arch):
    """The registry's architecture for each mmseg checkpoint accepts exactly mmseg's own state dict."""
    from segcli.loading.checkpoint import match_state_dict
    from segcli.loading.formats.mmseg import map_key
    from segcli.loading.registry import load_registry
    from segcli.model import Segmentor

    spec = load_registry()[arch]
    kind = "psp" if spec.network.arch == "pspnet" else "uper"
    k = spec.network.num_classes
    mm = mmseg_model(kind, spec.network.backbone.depth, k, spec.network.decode_head.align_corners)
    with torch.device("meta"):
        ours = Segmentor(spec.network)
    mapped = {map_key(key): v for key, v in mm.state_dict().items()}
    assert set(match_state_dict(ours, mapped, arch)) == set(ours.state_dict())


def test_a_file_named_as_the_published_checkpoint_must_be_it(cli, tmp_path):
    """The by-hand route (`segcli convert FILE --arch NAME`) checks mmcv's sha256 prefix in the published
    name, as `segcli download` does: another file under that name is refused before it is read."""
    fake = tmp_path / "pspnet_r50-d8_512x512_160k_ade20k_20200615_184358-1890b0bd.pth"
    fake.write_bytes(b"not the published checkpoint")
    r = cli("convert", fake, "--arch", "pspnet-r50-d8-ade20k", "-o", tmp_path / "out")
    assert r.exit_code == 2
    assert "named as pspnet-r50-d8-ade20k's published checkpoint" in r.stderr and "1890b0bd" in r.stderr
    assert not (tmp_path / "out").exists()
