"""Video inputs (PyAV, the [video] extra): every chosen frame segmented like a photo, resumable, one line per
bad frame; `--save video` an overlay video and a class-area CSV. The videos are encoded here with PyAV."""

from __future__ import annotations

import csv
import json
from fractions import Fraction
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from helpers import VIDEO_FPS, VIDEO_H, VIDEO_W, frame_image
from helpers import encode_video as encode
from PIL import Image

from segcli.errors import UsageError
from segcli.io.layout import assign_bases
from segcli.io.video import FrameReader, Selection, parse_time, probe

av = pytest.importorskip("av", reason="PyAV is not installed (the [video] extra)")

W, H, N, FPS = VIDEO_W, VIDEO_H, 12, VIDEO_FPS  # frames 0.1 s apart
SMALL = ("--resize", "none")  # the frames at their own 64×48 (the hf preset would resize to 512²)


def decoded(path: Path) -> list[np.ndarray]:
    """Every frame as PyAV decodes it, in order (the reference the reader is held to)."""
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_times_and_selections():
    assert parse_time("12.5", "--start") == 12.5 and parse_time("1:30", "--start") == 90.0
    assert parse_time("01:02:03.5", "--end") == 3723.5
    for bad in ("1:75", "x", "-3", "1:2:3:4"):
        with pytest.raises(UsageError, match="--start"):
            parse_time(bad, "--start")
    times = [i / 10 for i in range(30)]  # 10 fps, 3 s
    assert Selection().frames(times) == list(range(30))
    assert Selection.parse(4, None, None, None).frames(times) == [0, 4, 8, 12, 16, 20, 24, 28]
    assert Selection.parse(None, 4.0, "0.5", "2").frames(times) == [5, 8, 10, 13, 15, 18]  # 0.5, 0.75→0.8, 1.0, …
    assert Selection.parse(None, 50.0, None, "0.3").frames(times) == [0, 1, 2]  # above the source's rate: all
    assert Selection.parse(2, None, "1", None).frames(times) == list(range(10, 30, 2))
    with pytest.raises(UsageError, match="give one of them"):
        Selection.parse(2, 3.0, None, None)
    with pytest.raises(UsageError, match="not after"):
        Selection.parse(None, None, "2", "1")


@pytest.mark.parametrize(("name", "codec"), [("b.mp4", "libx264"), ("m.avi", "mjpeg"), ("v.webm", "libvpx-vp9")])
def test_the_reader_gives_each_frame_as_decoded_in_any_order(tmp_path, name, codec):
    video = encode(tmp_path / name, codec, n=40)
    info = probe(video, 1 << 30)
    assert (info.width, info.height, len(info.pts)) == (W, H, 40)
    assert [round(t, 6) for t in info.times()] == [round(i / FPS, 6) for i in range(40)]
    frames = decoded(video)
    order = [3, 2, 5, 39, 38, 0, 17, 16, 30]  # behind (seek back), held ahead, far ahead (seek)
    reader = FrameReader(info, set(order))
    for i in order:
        assert np.array_equal(reader.frame(i), frames[i]), i
    assert reader.container is None  # every wanted frame handed out: the file is closed


def test_predict_segments_every_frame_as_the_decoded_image(tmp_path, cli, tiny_convnext_dir):
    (tmp_path / "in").mkdir()
    video = encode(tmp_path / "in" / "clip.mp4")
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    for i, image in enumerate(decoded(video)):
        Image.fromarray(image).save(frames_dir / f"{i:06d}.png")
    r = cli("predict", video, "-o", tmp_path / "out", "-m", tiny_convnext_dir, *SMALL, "--jsonl", "--batch-size", "3")
    assert r.exit_code == 0, r.output
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert [d["frame"]["index"] for d in records] == list(range(N))
    assert [d["frame"]["time_s"] for d in records] == [round(i / FPS, 6) for i in range(N)]
    assert {d["input"] for d in records} == {str(video)} and records[4]["name"] == "clip/000004"
    assert all(d["image"] == {"width": W, "height": H} for d in records)
    r = cli("predict", frames_dir, "-o", tmp_path / "ref", "-m", tiny_convnext_dir, *SMALL)
    assert r.exit_code == 0, r.output
    for i in range(N):
        got = np.asarray(Image.open(tmp_path / "out" / "clip" / f"{i:06d}.png"))
        want = np.asarray(Image.open(tmp_path / "ref" / f"{i:06d}.png"))
        assert np.array_equal(got, want), i
    doc = json.loads((tmp_path / "out" / "clip" / "000004.json").read_text())
    assert doc["frame"] == {"index": 4, "time_s": 0.4}


def test_resume_redoes_only_frames_without_outputs(tmp_path, cli, tiny_convnext_dir):
    video = encode(tmp_path / "clip.mp4", n=8)
    out = tmp_path / "out"
    args = ("predict", video, "-o", out, "-m", tiny_convnext_dir, *SMALL, "--jsonl", "--every", "2")
    assert cli(*args).exit_code == 0
    assert sorted(p.name for p in (out / "clip").glob("*.png")) == [f"{i:06d}.png" for i in (0, 2, 4, 6)]
    before = (out / "clip" / "000002.png").read_bytes()
    (out / "clip" / "000004.png").unlink()
    r = cli(*args)
    assert r.exit_code == 0, r.output
    status = {json.loads(line)["frame"]["index"]: json.loads(line)["status"] for line in r.stdout.splitlines()}
    assert status == {0: "skipped", 2: "skipped", 4: "done", 6: "skipped"}
    assert (out / "clip" / "000002.png").read_bytes() == before


def test_a_damaged_frame_is_that_frames_line_and_the_video_goes_on(tmp_path, cli, tiny_convnext_dir):
    video = encode(tmp_path / "cam.avi", "mjpeg", n=8)
    with av.open(str(video)) as c:
        packets = [(p.pos, p.size) for p in c.demux(video=0) if p.size]
    data = bytearray(video.read_bytes())
    pos, size = packets[5]
    data[pos + 20 : pos + size] = b"\xff" * (size - 20)  # frame 5's JPEG, all but its header, destroyed
    video.write_bytes(bytes(data))
    r = cli("predict", video, "-o", tmp_path / "out", "-m", tiny_convnext_dir, *SMALL, "--jsonl")
    assert r.exit_code == 1, r.output
    records = [json.loads(line) for line in r.stdout.splitlines()]
    failed = [d for d in records if d["status"] == "failed"]
    assert [d["frame"]["index"] for d in failed] == [5]
    assert failed[0]["error"].startswith(f"{video}: frame 5 (0.500 s) cannot be decoded")
    assert sum(d["status"] == "done" for d in records) == 7


def test_save_video_writes_the_overlay_video_and_the_areas(tmp_path, cli, tiny_convnext_dir):
    video = encode(tmp_path / "clip.mp4", n=10)
    out = tmp_path / "out"
    r = cli(
        "predict",
        video,
        "-o",
        out,
        "-m",
        tiny_convnext_dir,
        *SMALL,
        "--save",
        "video",
        "--every",
        "3",
        "--alpha",
        "0.6",
    )
    assert r.exit_code == 0, r.output
    chosen = [0, 3, 6, 9]
    source = decoded(video)
    with av.open(str(out / "clip_overlay.mp4")) as c:
        s = c.streams.video[0]
        assert s.codec_context.name in ("h264", "mpeg4")
        got = [(round(f.time, 3), f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    assert [t for t, _ in got] == [i / FPS for i in chosen]  # the chosen frames at their own timestamps
    with Image.open(out / "clip" / "000003.png") as im:
        labels, pal = np.asarray(im), np.asarray(im.getpalette()[: 3 * 256]).reshape(-1, 3)
    want = 0.4 * source[3].astype(float) + 0.6 * pal[labels]
    luma = np.array([0.299, 0.587, 0.114])  # compared on luma: 4:2:0 halves the chroma of per-pixel labels
    assert got[1][1].shape == (H, W, 3)
    assert np.abs((got[1][1] - want) @ luma).mean() < 3  # H.264 at CRF 18
    assert np.abs((got[1][1] - source[3].astype(float)) @ luma).mean() > 10  # … and not the frame alone
    with open(out / "clip_areas.csv", newline="") as f:
        rows = list(csv.reader(f))
    classes = [c["name"] for c in json.loads((out / "classes.json").read_text())["classes"]]
    assert rows[0] == ["frame", "time_s", *classes]
    assert [int(row[0]) for row in rows[1:]] == chosen
    counts = np.bincount(labels.ravel(), minlength=len(classes)) / labels.size
    assert np.allclose([float(v) for v in rows[2][2:]], counts, atol=1e-6)
    assert float(rows[2][1]) == pytest.approx(0.3)


def test_unreadable_and_oversized_videos_are_one_line_each(tmp_path, cli, tiny_convnext_dir):
    (tmp_path / "fake.mp4").write_bytes(b"not a video at all")
    big = encode(tmp_path / "big.mp4", n=2)
    Image.fromarray(frame_image(0, 32, 24)).save(tmp_path / "p.png")  # 768 pixels: within the limit
    r = cli(
        "predict", tmp_path, "-o", tmp_path / "out", "-m", tiny_convnext_dir, *SMALL, "--max-pixels", "3000", "--jsonl"
    )
    assert r.exit_code == 1, r.output
    records = {json.loads(line)["input"]: json.loads(line) for line in r.stdout.splitlines()}
    assert records[str(tmp_path / "fake.mp4")]["error"].startswith(
        f"{tmp_path / 'fake.mp4'}: not a video PyAV can read"
    )
    assert "frames of 64x48 = 3072 pixels exceed --max-pixels 3000" in records[str(big)]["error"]
    assert records[str(tmp_path / "p.png")]["status"] == "done"  # the batch went on


def test_a_video_beside_a_folder_of_its_name_keeps_outputs_apart():
    rels = ["clip.mp4", "clip/000000.jpg", "x.mp4", "x.mkv", "summary.json.mp4"]
    bases = dict(zip(rels, assign_bases([PurePosixPath(r) for r in rels]), strict=True))
    assert bases["clip.mp4"] == PurePosixPath("clip.mp4")  # its frames' folder clip/ holds an input's outputs
    assert bases["clip/000000.jpg"] == PurePosixPath("clip/000000")
    assert {bases["x.mp4"], bases["x.mkv"]} == {PurePosixPath("x.mp4"), PurePosixPath("x.mkv")}  # one folder x/
    assert bases["summary.json.mp4"] == PurePosixPath("summary.json.mp4")  # summary.json must stay a file


def test_odd_sizes_and_frame_rates_survive_the_overlay_video(tmp_path, cli, tiny_convnext_dir):
    video = tmp_path / "odd.mp4"
    with av.open(str(video), "w") as c:  # 4:4:4 H.264 at an odd size and 30000/1001 fps
        s = c.add_stream("libx264", rate=Fraction(30000, 1001))
        s.width, s.height, s.pix_fmt = 63, 45, "yuv444p"
        for i in range(3):
            for p in s.encode(av.VideoFrame.from_ndarray(frame_image(i, 64, 48)[:45, :63].copy(), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    r = cli("predict", video, "-o", tmp_path / "out", "-m", tiny_convnext_dir, *SMALL, "--save", "video")
    assert r.exit_code == 0, r.output
    with av.open(str(tmp_path / "out" / "odd_overlay.mp4")) as c:
        frames = list(c.decode(video=0))
    assert [(f.width, f.height) for f in frames] == [(63, 45)] * 3
    assert [round(f.time, 4) for f in frames] == [round(i * 1001 / 30000, 4) for i in range(3)]


def test_without_pyav_each_video_is_one_line_naming_the_extra(tmp_path, tiny_convnext_dir, monkeypatch):
    import sys

    from segcli.batch import predict
    from segcli.batch import video as batch_video

    (tmp_path / "in").mkdir()
    video = encode(tmp_path / "in" / "clip.mp4", n=2)
    Image.fromarray(frame_image(0, 32, 24)).save(tmp_path / "in" / "p.png")
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError
    monkeypatch.setattr(batch_video, "_PROBED", {})
    summary = predict([str(tmp_path / "in")], str(tiny_convnext_dir), tmp_path / "out")
    assert summary.done == 1 and [f["input"] for f in summary.failures] == [str(video)]
    assert "video inputs need PyAV" in summary.failures[0]["error"]
    assert "pip install 'segcli[video]'" in summary.failures[0]["error"]


def test_folder_scans_find_videos_but_not_typescript(tmp_path):
    from segcli.io.inputs import discover

    for name in ("a.mp4", "b.MKV", "c.ts", "d.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert sorted(it.rel.as_posix() for it in discover([str(tmp_path)]).items) == ["a.mp4", "b.MKV", "d.jpg"]
    named = discover([str(tmp_path / "c.ts")]).items  # named, it is read as a video
    assert [it.rel.as_posix() for it in named] == ["c.ts"]
