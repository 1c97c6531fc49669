"""Output names are injective: no two inputs, and no input and a run-level file, ever share an output path."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from hypothesis import given, settings
from hypothesis import strategies as st

from segcli.io.layout import RUN_FILES, SUFFIXES, assign_bases, frame_base, output_paths, video_paths
from segcli.io.video import is_video_path

FOLDERS = [
    "", "a", "A", "a.png", "x.png", "sub/deeper", "summary.json", "Summary.JSON", "summary.json~", "index.html", "x",
    "x/000001", "x.mp4",
]  # fmt: skip
STEMS = [
    "x",
    "X",
    "x_label",
    "x.jpg",
    "x.png",
    "x~2",
    "summary",
    "legend",
    "classes",
    "index",
    "x_overlay",
    "a",
    "000001",
]
EXTS = [".jpg", ".png", ".JPG", ".jpg.png", "", "_label.png", ".json", ".npy", ".mp4", ".MKV", "_overlay.mp4"]
rel_paths = st.builds(
    lambda d, s, e: PurePosixPath(d) / f"{s}{e}", *(st.sampled_from(v) for v in (FOLDERS, STEMS, EXTS))
)


def all_outputs(rels: list[PurePosixPath], bases: list[PurePosixPath]) -> list[str]:
    """Every output path of every input; a video's: its own files and its frames' (frames 0, 1 and 10**6)."""
    kinds, out = frozenset({"label", "overlay", "probs", "json"}), Path("out")
    photos = [b for r, b in zip(rels, bases, strict=True) if not is_video_path(r.name)]
    frames = [
        frame_base(b, i) for r, b in zip(rels, bases, strict=True) if is_video_path(r.name) for i in (0, 1, 10**6)
    ]
    paths = [p for b in photos + frames for p in output_paths(out, b, kinds, None).values()]
    paths += [p for b in photos + frames for p in output_paths(out, b, frozenset({"probs"}), 5).values()][1::2]
    paths += [
        p for r, b in zip(rels, bases, strict=True) if is_video_path(r.name) for p in video_paths(out, b).values()
    ]
    return [p.relative_to("out").as_posix().casefold() for p in paths]


@settings(max_examples=400, deadline=None)
@given(st.lists(rel_paths, unique=True, max_size=25), st.randoms())
def test_names_are_injective_and_do_not_depend_on_order(rels, rnd):
    bases = assign_bases(rels)
    outs = all_outputs(rels, bases)
    assert len(outs) == len(set(outs))  # no two outputs (of any inputs, any kinds) share a path
    assert not any("/" not in o and RUN_FILES.fullmatch(o) for o in outs)  # nor a run-level file's
    videos = [frame_base(b, 0) for r, b in zip(rels, bases, strict=True) if is_video_path(r.name)]
    folders = {p.as_posix().casefold() for b in bases + videos for p in b.parents if p.as_posix() != "."}
    assert not folders & set(outs)  # nor a folder other outputs need
    assert not any(RUN_FILES.fullmatch(f) for f in folders)  # nor is a folder where a run-level file goes
    shuffled = list(rels)
    rnd.shuffle(shuffled)
    again = dict(zip(shuffled, assign_bases(shuffled), strict=True))
    assert [again[r] for r in rels] == bases  # the set decides, not the order


def test_short_names_where_unambiguous_and_the_reported_collisions():
    rels = [
        PurePosixPath(p) for p in ["photo.jpg", "x.jpg", "x.png", "x.jpg.png", "a.jpg", "a_label.jpg", "summary.jpg"]
    ]
    got = {r.as_posix(): b.as_posix() for r, b in zip(rels, assign_bases(rels), strict=True)}
    assert got["photo.jpg"] == "photo"  # photo.png, as users expect
    # x.jpg / x.png share a stem; x.jpg.png's short base x.jpg would then collide with x.jpg's full one
    assert got["x.jpg"] == "x.jpg" and got["x.png"] == "x.png" and got["x.jpg.png"] == "x.jpg.png"
    # a's label PNG (a_label.png) would be a_label.jpg's palette PNG: both leave the short form
    assert got["a.jpg"] == "a.jpg" and got["a_label.jpg"] == "a_label.jpg"
    assert got["summary.jpg"] == "summary.jpg"  # summary.json belongs to the run
    assert SUFFIXES["png"] == ".png"
