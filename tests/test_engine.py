"""The inference engine: window grid, bounded accumulation (= the full buffer), resampling, views, presets."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import random_image

from segcli import Segmenter
from segcli.engine import plan, predict, view_size
from segcli.engine.heads import Heads
from segcli.engine.merge import Merger, ViewChain
from segcli.engine.presets import Params, Protocol, Resize, resolve
from segcli.engine.resample import RowResampler, rescale_size, resize_bilinear
from segcli.engine.slide import SlideAccumulator, grid, spans, window_weights
from segcli.errors import UsageError
from segcli.loading.registry import load_registry


@pytest.fixture(scope="module")
def seg(tiny_convnext_dir) -> Segmenter:
    return Segmenter.from_pretrained(tiny_convnext_dir)


def test_spans_follow_mmseg():
    # h_grids = max(H - crop + stride - 1, 0) // stride + 1; the last window moved back to end at H
    assert spans(2048, 512, 341) == [(0, 512), (341, 853), (682, 1194), (1023, 1535), (1364, 1876), (1536, 2048)]
    assert spans(1024, 512, 512) == [(0, 512), (512, 1024)]  # exact multiple: no overlap, no shift
    assert spans(300, 512, 341) == [(0, 300)]  # smaller than the crop: one smaller window, no padding
    assert spans(513, 512, 341) == [(0, 512), (1, 513)]


def _full_buffer(windows, h, w, k):
    """mmseg's slide_inference accumulation, written out: a [K, H, W] sum and a count, then divide."""
    preds, count = torch.zeros(k, h, w), torch.zeros(1, h, w)
    for win, logit in windows:
        preds += F.pad(logit, (win.x1, w - win.x2, win.y1, h - win.y2))
        count[:, win.y1 : win.y2, win.x1 : win.x2] += 1
    return preds / count


@pytest.mark.parametrize(
    "h, w, crop, stride",
    [(1001, 517, 256, 171), (300, 457, 512, 341), (512, 1024, 256, 256), (400, 333, 100, 30), (90, 700, 64, 17)],
)
def test_strip_accumulation_equals_the_full_buffer(h, w, crop, stride):
    k = 5
    rows = grid(h, w, (crop, crop), (stride, stride))
    g = torch.Generator().manual_seed(h * w)
    windows = [(win, torch.randn(k, *win.shape, generator=g)) for row in rows for win in row]
    acc = SlideAccumulator(h, w, rows, k)
    out = torch.full((k, h, w), float("nan"))
    written = torch.zeros(h, w, dtype=torch.int32)
    order = [(r, c) for r, row in enumerate(rows) for c in range(len(row))]
    for (r, c), (_, logit) in zip(order, windows, strict=True):
        for b in acc.add(r, c, logit):
            out[:, b.y1 : b.y2, b.x1 : b.x2] = b.data
            written[b.y1 : b.y2, b.x1 : b.x2] += 1
    assert bool((written == 1).all())  # every pixel finished exactly once
    assert torch.equal(out, _full_buffer(windows, h, w, k))  # same additions in the same order: same floats


def _gauss(n):  # σ = n/8 about the centre, scaled to a peak of 1, floored at 1e-4: written out per pixel
    g = [math.exp(-0.5 * ((i + 0.5 - n / 2) / (n / 8)) ** 2) for i in range(n)]
    return [max(v / max(g), 1e-4) for v in g]


def test_window_functions():
    assert window_weights(7, "flat").tolist() == [1.0] * 7
    assert window_weights(64, "gaussian").tolist() == pytest.approx(_gauss(64), rel=1e-6)
    hann = window_weights(8, "hann")
    sines = [math.sin(math.pi * (i + 0.5) / 8) ** 2 for i in range(8)]
    assert hann.tolist() == pytest.approx([max(v / max(sines), 1e-4) for v in sines], rel=1e-6)
    assert window_weights(512, "hann").min().item() == pytest.approx(1e-4)  # the border keeps a weight


@pytest.mark.parametrize("blend", ["gaussian", "hann"])
@pytest.mark.parametrize("h, w, crop, stride", [(300, 457, 128, 85), (90, 200, 64, 17), (50, 60, 64, 40)])
def test_blended_windows_are_the_weighted_mean_of_a_full_buffer(blend, h, w, crop, stride):
    k = 3
    rows = grid(h, w, (crop, crop), (stride, stride))
    g = torch.Generator().manual_seed(w)
    windows = [(win, torch.randn(k, *win.shape, generator=g)) for row in rows for win in row]
    num, den = torch.zeros(k, h, w), torch.zeros(1, h, w)
    for win, logit in windows:  # each window's 2-D weights, built pixel by pixel from the 1-D formula
        ys = _gauss(win.y2 - win.y1) if blend == "gaussian" else window_weights(win.y2 - win.y1, "hann").tolist()
        xs = _gauss(win.x2 - win.x1) if blend == "gaussian" else window_weights(win.x2 - win.x1, "hann").tolist()
        weight = torch.tensor(ys)[:, None] * torch.tensor(xs)[None, :]
        num[:, win.y1 : win.y2, win.x1 : win.x2] += logit * weight
        den[:, win.y1 : win.y2, win.x1 : win.x2] += weight
    acc = SlideAccumulator(h, w, rows, k, blend=blend)
    out = torch.full((k, h, w), float("nan"))
    order = [(r, c) for r, row in enumerate(rows) for c in range(len(row))]
    for (r, c), (_, logit) in zip(order, windows, strict=True):
        for b in acc.add(r, c, logit):
            out[:, b.y1 : b.y2, b.x1 : b.x2] = b.data
    torch.testing.assert_close(out, num / den, rtol=1e-5, atol=1e-5)
    if len(windows) > 1:  # and not the plain mean
        assert not torch.allclose(out, _full_buffer(windows, h, w, k), atol=1e-3)


def test_accumulator_memory_is_bounded_by_width_not_area():
    h, w, crop, stride, k = 3000, 1200, 200, 133, 7
    rows = grid(h, w, (crop, crop), (stride, stride))
    acc = SlideAccumulator(h, w, rows, k)
    for r, row in enumerate(rows):
        for c, win in enumerate(row):
            acc.add(r, c, torch.zeros(k, *win.shape))
    overlap = max(row[0].y2 - f for row, f in zip(rows, acc.finish, strict=True))  # rows carried to the next window row
    assert overlap == 193  # the last window row is moved back to end at the border: a bigger overlap
    bound = k * (overlap * w + 2 * crop * crop)  # one carry at full width + the columns around the window
    assert acc.peak_elements <= bound
    assert acc.peak_elements < k * h * w / 10  # the full buffer holds 15× more here, ∝ height


def test_windows_out_of_order_are_refused():
    rows = grid(100, 100, (64, 64), (40, 40))
    acc = SlideAccumulator(100, 100, rows, 2)
    with pytest.raises(ValueError, match="grid order"):
        acc.add(0, 1, torch.zeros(2, 64, 64))


@pytest.mark.parametrize(
    "src, dst, ac",
    [
        ((128, 128), (123, 201), False),
        ((16, 24), (300, 257), False),
        ((37, 50), (100, 30), True),
        ((50, 40), (50, 40), False),
    ],
)
def test_row_resampler_equals_interpolate(src, dst, ac):
    x = torch.randn(6, *src, generator=torch.Generator().manual_seed(0))
    ref = F.interpolate(x[None], size=dst, mode="bilinear", align_corners=ac)[0]
    out = torch.full((6, *dst), float("nan"))
    rs = RowResampler(src, dst, ac)
    cuts = [0, 1, 2, 7, 8, src[0] // 2, src[0]]  # strips of 1, 1, 5, 1, ... rows
    for a, b in itertools.pairwise(cuts):
        if b > a:
            for y, strip in rs.push(a, x[:, a:b]):
                out[:, y : y + strip.shape[1]] = strip
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


def test_flipped_view_crops_the_mirrored_image():
    img = random_image(40, 60, seed=3)
    params = Params("t", Resize("none"), "bilinear", "slide", (32, 32), (20, 20), flip=True)
    plain, flipped = plan(img, params, 3)
    mirrored = img[:, ::-1]
    for row in flipped.rows:
        for win in row:
            assert np.array_equal(flipped.crop(win), mirrored[win.y1 : win.y2, win.x1 : win.x2])
            assert np.array_equal(plain.crop(win), img[win.y1 : win.y2, win.x1 : win.x2])


def test_flip_views_are_mirror_symmetric(seg):
    """With views {image, mirrored image}, mirroring the input mirrors the averaged probabilities."""
    img = random_image(150, 211, seed=4)
    p = seg.params("hf", resize="none", mode="slide", crop=96, stride=64, flip=True)
    a = predict(seg.model, img, p, logits=True).logits.exp()
    b = predict(seg.model, np.ascontiguousarray(img[:, ::-1]), p, logits=True).logits.exp()
    torch.testing.assert_close(a, b.flip(-1), rtol=0, atol=1e-6)


def test_view_chain_flips_back_then_resizes():
    data = torch.randn(3, 10, 16)
    chain = ViewChain((10, 16), (25, 40), flip=True, align_corners=False)
    from segcli.engine.slide import Block

    out = torch.cat([b.data for b in chain.push(Block(0, 10, 0, 16, data))], dim=1)
    ref = F.interpolate(data.flip(-1)[None], size=(25, 40), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


def test_whole_equals_slide_when_the_crop_covers_the_image(seg):
    img = random_image(300, 457, seed=5)
    whole = seg.logits(img, "hf", resize="none")
    slide = seg.logits(img, "hf", resize="none", mode="slide", crop=512, stride=341)
    assert torch.equal(whole, slide)


def test_tile_batch_gives_the_same_result(seg):
    img = random_image(400, 530, seed=6)
    kw = dict(resize="none", mode="slide", crop=128, stride=85)
    one = seg.run(img, "hf", logits=True, tile_batch=1, **kw)
    many = seg.run(img, "hf", logits=True, tile_batch=7, **kw)
    assert one.windows == many.windows == 5 * 6
    assert np.array_equal(one.labels, many.labels)
    torch.testing.assert_close(one.logits, many.logits, rtol=0, atol=1e-5)  # batched convs: last-bit noise


def test_multi_view_is_the_mean_of_softmaxes(seg):
    """12 views (6 scales × flip) computed one by one and averaged = the engine's merged result."""
    img = random_image(120, 170, seed=7)
    p = seg.params("mmseg-ms", resize="96:384")
    merged = predict(seg.model, img, p, logits=True, probs=True)
    single = []
    for view in plan(img, p, seg.num_classes):
        sp = Params("one", Resize("none"), "bilinear", "whole")
        x = view.image[:, ::-1] if view.flip else view.image
        lg = predict(seg.model, np.ascontiguousarray(x), sp, logits=True).logits
        lg = lg.flip(-1) if view.flip else lg
        single.append(F.interpolate(lg[None], size=(120, 170), mode="bilinear", align_corners=False)[0].softmax(0))
    mean = torch.stack(single).mean(0)
    assert merged.views == 12
    torch.testing.assert_close(merged.logits.exp(), mean, rtol=0, atol=1e-5)
    assert np.abs(merged.probs.astype(np.float32) - mean.numpy()).max() < 1e-3  # float16 storage
    assert np.array_equal(merged.labels, merged.logits.argmax(0).numpy())


def test_merger_holds_a_band_not_the_image():
    m = Merger(2, (1000, 50), Heads.single(4), labels=True, probs=False, logits=False)
    from segcli.engine.slide import Block

    for y in range(0, 1000, 100):  # two views advancing together, 100 rows at a time
        for v in (0, 1):
            m.add(v, Block(y, y + 100, 0, 50, torch.randn(4, 100, 50)))
    assert m.peak_elements <= 4 * 100 * 50
    assert m.result().labels.shape == (1000, 50)


def test_lazy_views_cut_in_different_strips_average_row_by_row():
    """Views resized straight from the model's resolution arrive in strips of their own heights; the merged
    probabilities are the mean of the views' softmaxes (grouped heads: each group's own softmax)."""
    from segcli.engine.heads import PartGroup
    from segcli.engine.slide import Block

    heads = Heads(3, (("material", 2),), (PartGroup(1, (0, 5, 7)),), 0, 8)
    full = [torch.randn(8, 37, 11, generator=torch.Generator().manual_seed(v)) for v in range(3)]

    def strips(values, rows):
        for y in range(0, values.shape[1], rows):
            yield Block(y, min(y + rows, values.shape[1]), 0, 11, values[:, y : y + rows])

    m = Merger(3, (37, 11), heads, labels=True, probs=True, logits=True)
    for v, rows in enumerate((5, 13, 37)):
        m.add_lazy(v, strips(full[v], rows), held=full[v].numel())
    result = m.result()
    mean = torch.stack([heads.softmax(f) for f in full]).mean(0)
    torch.testing.assert_close(result.logits.exp(), mean[:3], rtol=0, atol=1e-6)
    assert m.peak_elements == 3 * 8 * 37 * 11
    expected = heads.labels(mean)
    assert np.array_equal(result.labels, expected["labels"]) and np.array_equal(result.maps["part"], expected["part"])
    assert set(np.unique(result.maps["part"][result.labels != 1]).tolist()) == {0}  # parts only on object 1
    assert set(np.unique(result.maps["part"]).tolist()) <= {0, 5, 7}


def test_row_resampler_shrinking_more_than_a_strip():
    """A strong shrink (768 → 70 rows, 16-row strips): some strips hold no output row's first source row."""
    from segcli.engine.resample import RowResampler

    values = torch.randn(3, 768, 8, generator=torch.Generator().manual_seed(2))
    rs = RowResampler((768, 8), (70, 8), whole_bytes=0)
    out = torch.zeros(3, 70, 8)
    for y in range(0, 768, 16):
        for r0, strip in rs.push(y, values[:, y : y + 16]):
            out[:, r0 : r0 + strip.shape[1]] = strip
    expected = F.interpolate(values[None], size=(70, 8), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_view_sizes_follow_mmcv():
    p = resolve("mmseg", Protocol(512, "slide"))
    assert view_size(683, 512, p, 1.0) == (683, 512)  # short side already 512
    assert view_size(300, 400, p, 1.0) == (512, 683)  # small images are enlarged to short side 512
    assert view_size(400, 3000, p, 1.0) == (273, 2048)  # long side capped at 2048
    assert view_size(512, 683, p, 0.5) == (256, 342)  # 0.x MultiScaleFlipAug: ratio × (2048, 512)


def test_cv2_style_image_resize_is_within_one_level_of_opencv():
    cv2 = pytest.importorskip(
        "cv2", reason="opencv-python-headless is not installed (the [test] extra: semseg's cv2 resizing)"
    )
    img = random_image(300, 457, seed=8)
    for size in [(512, 780), (150, 229), (1001, 517)]:
        ours = resize_bilinear(img, size).astype(int)
        ref = cv2.resize(img, size[::-1], interpolation=cv2.INTER_LINEAR).astype(int)
        assert np.abs(ours - ref).max() <= 1  # OpenCV rounds 11-bit fixed-point weights


def test_rescale_size_matches_mmcv():
    mmcv = pytest.importorskip(
        "mmcv", reason="mmcv-lite is not installed (the [test] extra: the mmsegmentation reference)"
    )
    rng = np.random.default_rng(0)
    for h, w in rng.integers(16, 4000, (300, 2)):
        for scale in [(2048, 512), (2560, 640), (1536, 384)]:
            assert rescale_size(int(w), int(h), *scale) == mmcv.rescale_size((int(w), int(h)), scale)


def test_registry_presets():
    specs = load_registry()
    tiny = resolve("mmseg", specs["upernet-convnext-tiny"].evaluation)
    assert (tiny.resize, tiny.mode, tiny.crop, tiny.stride) == (
        Resize("keep", 512, 2048),
        "slide",
        (512, 512),
        (341, 341),
    )
    large = resolve("mmseg", specs["upernet-convnext-large"].evaluation)
    assert (str(large.resize), large.crop, large.stride) == ("640:2560", (640, 640), (426, 426))
    swin = resolve("mmseg-ms", specs["upernet-swin-base"].evaluation)
    assert (swin.mode, swin.crop, swin.scales, swin.flip, swin.views) == (
        "whole",
        None,
        (0.5, 0.75, 1.0, 1.25, 1.5, 1.75),
        True,
        12,
    )
    hf = resolve("hf", specs["upernet-swin-base"].evaluation)
    assert (str(hf.resize), hf.resample, hf.mode) == ("512x512", "pil", "whole")
    assert all(s.preset == "mmseg" for n, s in specs.items() if n.startswith("upernet-"))


def test_overrides_and_their_errors():
    proto = Protocol(512, "slide")
    p = resolve("mmseg", proto, resize="none", crop="256x384", stride=200, scales="1,1.5", flip=True, tile_batch=3)
    assert (p.resize.kind, p.crop, p.stride, p.scales, p.flip, p.tile_batch) == (
        "none",
        (256, 384),
        (200, 200),
        (1.0, 1.5),
        True,
        3,
    )
    assert resolve("hf", proto, mode="slide").crop == (512, 512)  # slide on a whole preset: the model's crop
    assert resolve("mmseg", proto, mode="whole").crop is None
    for bad, msg in [
        ({"resize": "big"}, "invalid resize"),
        ({"mode": "tiles"}, "invalid mode"),
        ({"stride": 600}, "need 1 <= stride <= crop"),
        ({"scales": "0,1"}, "must be positive"),
        ({"crop": "ax3"}, "invalid crop"),
        ({"tile_batch": 0}, "at least 1"),
        ({"colour": 1}, "unknown"),
        ({"blend": "cosine"}, "invalid blend"),
    ]:
        with pytest.raises(UsageError, match=msg):
            resolve("mmseg", proto, **bad)
    with pytest.raises(UsageError, match="apply to slide mode"):
        resolve("hf", proto, crop=256)
    with pytest.raises(UsageError, match="apply to slide mode"):
        resolve("hf", proto, blend="gaussian")
    assert resolve("mmseg", proto, blend="hann").blend == "hann" and resolve("mmseg", proto).blend == "flat"
    assert "blend" not in resolve("mmseg", proto).to_json()  # flat: earlier runs' fingerprints hold
    assert resolve("mmseg", proto, blend="gaussian").to_json()["blend"] == "gaussian"
    with pytest.raises(UsageError, match="unknown preset"):
        resolve("tiles", proto)


def test_params_are_recorded_in_json(seg):
    p = seg.params("mmseg-ms", resize="128:512")
    d = p.to_json()
    assert d["preset"] == "mmseg-ms" and d["resize"] == "128:512" and d["scales"][0] == 0.5 and d["flip"] is True


def test_flip_twice_is_the_identity(seg):
    """The flipped view of the mirrored image sees exactly the windows of the unflipped image."""
    img = random_image(90, 130, seed=11)
    p = seg.params("hf", resize="none", mode="slide", crop=64, stride=40, flip=True)
    plain = plan(img, p, seg.num_classes)[0]
    flipped_of_mirror = plan(np.ascontiguousarray(img[:, ::-1]), p, seg.num_classes)[1]
    for row in plain.rows:
        for win in row:
            assert np.array_equal(flipped_of_mirror.crop(win), plain.crop(win))
    strip = torch.randn(4, 6, 9)
    chain = ViewChain((6, 9), (6, 9), flip=True, align_corners=False)
    from segcli.engine.slide import Block

    back = next(chain.push(Block(0, 6, 0, 9, strip.flip(-1)))).data
    assert torch.equal(back, strip)  # flipped twice: the values, bit for bit


def test_output_check_is_exact_despite_its_shortcuts():
    """`_check` sums first and samples every 8th pixel first: a NaN or inf anywhere, or equal logits at every
    pixel, still fail; finite values whose sum overflows and one distinct pixel off the sample grid do not."""
    from segcli.engine.forward import _check
    from segcli.errors import ModelOutputError

    rng = torch.Generator().manual_seed(0)
    for bad in (float("nan"), float("inf"), float("-inf")):
        out = torch.randn(1, 5, 33, 47, generator=rng)
        out[0, 3, 31, 45] = bad
        with pytest.raises(ModelOutputError, match="NaN or infinite"):
            _check(out)
    _check(torch.full((1, 5, 16, 16), 3e38).index_fill_(1, torch.tensor([0]), -3e38))  # sum overflows: fine
    flat = torch.zeros(1, 5, 33, 47)
    with pytest.raises(ModelOutputError, match="same logit"):
        _check(flat)
    flat[0, 2, 9, 13] = 1.0  # one pixel (not on the every-8th grid) tells the classes apart
    _check(flat)
