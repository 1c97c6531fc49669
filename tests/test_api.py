"""The Python API: image input forms and conversions, logits/predict contracts, strip resizing, dtypes."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import random_image
from PIL import Image

from segcli import Segmenter
from segcli.errors import ImageError, UsageError
from segcli.io.images import load_image


@pytest.fixture(scope="module")
def seg(tiny_convnext_dir) -> Segmenter:
    return Segmenter.from_pretrained(tiny_convnext_dir)


@pytest.fixture()
def photo(tmp_path):
    arr = random_image(123, 201, seed=7)
    path = tmp_path / "photo.png"
    Image.fromarray(arr).save(path)
    return arr, path


def test_path_pil_and_array_inputs_agree(seg, photo):
    arr, path = photo
    a = seg.predict(path)
    assert a.shape == (123, 201) and a.dtype == np.uint8
    assert np.array_equal(a, seg.predict(str(path)))
    assert np.array_equal(a, seg.predict(Image.open(path)))
    assert np.array_equal(a, seg.predict(arr))


def test_predict_is_argmax_of_logits(seg, photo):
    _, path = photo
    logits = seg.logits(path)
    assert logits.shape == (150, 123, 201) and logits.dtype == torch.float32 and logits.device.type == "cpu"
    assert np.array_equal(seg.predict(path), logits.argmax(0).numpy())


def test_hf_preset_is_model_logits_at_512_resized_back(seg, photo):
    """The hf preset = Pillow resize to 512×512, model logits resized bilinearly (align_corners=False)."""
    arr, path = photo
    x512 = np.asarray(Image.fromarray(arr).resize((512, 512), Image.Resampling.BILINEAR))
    x = seg.model.normalize(torch.tensor(x512).permute(2, 0, 1)[None].float())
    with torch.no_grad():
        ref = F.interpolate(seg.model(x), size=(123, 201), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(seg.logits(path, "hf"), ref, rtol=0, atol=1e-5)


def test_label_dtype_grows_with_classes():
    from segcli.engine.merge import label_dtype

    assert label_dtype(150) == np.uint8 and label_dtype(256) == np.uint8
    assert label_dtype(257) == np.uint16 and label_dtype(70000) == np.int32


def test_grayscale_rgba_palette_and_16bit(tmp_path):
    rgb = random_image(20, 30, seed=1)
    gray = rgb[..., 0]
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    assert np.array_equal(load_image(tmp_path / "g.png"), np.repeat(gray[..., None], 3, 2))

    rgba = np.dstack([rgb, np.full((20, 30), 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert np.array_equal(load_image(tmp_path / "a.png"), rgb)  # alpha dropped, colours kept

    pal = Image.fromarray(rgb).quantize(16)
    pal.save(tmp_path / "p.png")
    assert np.array_equal(load_image(tmp_path / "p.png"), np.asarray(pal.convert("RGB")))

    g16 = (gray.astype(np.uint16) * 257).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    assert np.array_equal(load_image(tmp_path / "g16.png"), np.repeat(gray[..., None], 3, 2))

    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.tif")  # C = 255 - R, M = 255 - G, Y = 255 - B, K = 0
    assert np.array_equal(load_image(tmp_path / "c.tif"), rgb)  # the same colours back, not inverted or gray


def test_exif_orientation_is_applied(tmp_path):
    """Orientation 6 ("rotate 90° clockwise to display") on quadrants of four colours: the image comes back
    rotated clockwise — stored bottom-left at the top-left — not counter-clockwise or mirrored."""
    red, green, blue, white = (220, 20, 20), (20, 200, 20), (20, 20, 220), (250, 250, 250)
    rgb = np.zeros((20, 40, 3), np.uint8)
    rgb[:10, :20], rgb[:10, 20:], rgb[10:, :20], rgb[10:, 20:] = red, green, blue, white
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgb).save(tmp_path / "r.jpg", exif=exif, quality=95)
    out = load_image(tmp_path / "r.jpg").astype(int)
    assert out.shape == (40, 20, 3)
    corners = {"top-left": out[5, 5], "top-right": out[5, 15], "bottom-left": out[35, 5], "bottom-right": out[35, 15]}
    expected = {"top-left": blue, "top-right": red, "bottom-left": white, "bottom-right": green}
    for where, colour in expected.items():
        assert np.abs(corners[where] - colour).max() < 12, (where, corners[where])
    stored = np.asarray(Image.open(tmp_path / "r.jpg").convert("RGB"))  # decoded as stored, EXIF ignored
    assert np.array_equal(out, np.rot90(stored, k=-1))  # numpy's clockwise rotation, exactly


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty file"),
        (b"plain text, not an image", "not an image Pillow can read"),
    ],
)
def test_bad_files_are_one_line_errors(tmp_path, content, message):
    f = tmp_path / "bad.png"
    f.write_bytes(content)
    with pytest.raises(ImageError, match=message) as e:
        load_image(f)
    assert str(f) in str(e.value) and "\n" not in str(e.value)


def test_truncated_and_missing_files(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(random_image(64, 64)).save(buf, "JPEG")
    (tmp_path / "t.jpg").write_bytes(buf.getvalue()[:300])
    with pytest.raises(ImageError, match=r"t\.jpg: cannot decode image"):
        load_image(tmp_path / "t.jpg")
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.jpg")


def test_pixel_limit(tmp_path):
    Image.fromarray(random_image(40, 50)).save(tmp_path / "big.png")
    with pytest.raises(ImageError, match=r"40 = 2,000 pixels exceeds the limit of 1,000"):
        load_image(tmp_path / "big.png", max_pixels=1000)
    assert load_image(tmp_path / "big.png", max_pixels=2000).shape == (40, 50, 3)


@pytest.mark.parametrize(
    "bad", [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 2), np.uint8), np.zeros((0, 4, 3), np.uint8), 42]
)
def test_unsupported_inputs(seg, bad):
    with pytest.raises(UsageError):
        seg.predict(bad)


def test_bfloat16_model(tiny_convnext_dir, photo):
    _, path = photo
    seg16 = Segmenter.from_pretrained(tiny_convnext_dir, dtype="bfloat16")
    assert seg16.dtype == torch.bfloat16
    logits = seg16.logits(path)
    ref = Segmenter.from_pretrained(tiny_convnext_dir).logits(path)
    assert logits.dtype == torch.float32 and logits.shape == ref.shape
    assert (logits - ref).abs().max() < 0.1 * ref.abs().max()  # bf16 has ~3 significant digits


def test_bad_device_and_dtype(tiny_convnext_dir):
    with pytest.raises(UsageError, match="unsupported dtype"):
        Segmenter.from_pretrained(tiny_convnext_dir, dtype="int8")
    with pytest.raises(UsageError, match="unknown device"):
        Segmenter.from_pretrained(tiny_convnext_dir, device="tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no CUDA GPU"):
            Segmenter.from_pretrained(tiny_convnext_dir, device="cuda")


def test_unknown_preset(seg, photo):
    with pytest.raises(UsageError, match="unknown preset 'mmseg-xl'"):
        seg.predict(photo[1], preset="mmseg-xl")


def test_16bit_scaling_rounds_like_division(tmp_path):
    values = np.array([[0, 128, 129, 385, 386, 65407, 65535, 257 * 100 + 128, 257 * 100 + 129]], np.uint16)
    Image.fromarray(values).save(tmp_path / "v.png")
    got = load_image(tmp_path / "v.png")[0, :, 0]
    assert got.tolist() == np.rint(values[0] / 257).astype(int).tolist() == [0, 0, 1, 1, 2, 255, 255, 100, 101]
