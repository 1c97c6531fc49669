"""`segcli predict --ray` and `segcli.ray.segment` on a real local Ray (no mocks): the same files as a
single-process run, the same resume, records in input order, and a worker killed mid-run changes nothing."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import photo, run_cli
from PIL import Image

from segcli.extras import has_module

pytest.importorskip("ray.data", reason="Ray Data is not installed (the [ray] extra)")
pytestmark = [pytest.mark.ray, pytest.mark.slow]  # a real local Ray starts in seconds, per run

RAY = ["--workers", "2", "--threads", "1"]


@pytest.fixture(scope="module")
def s3_endpoint():
    """moto's S3-API server for the module (None without moto), its address in the standard AWS variables
    before Ray starts: the workers inherit them, as a cluster's nodes would have their own."""
    if not has_module("moto.server") or not has_module("s3fs"):
        yield None
        return
    from servers import moto_server, s3_env

    with moto_server() as url:
        env = s3_env(url)
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield url
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(scope="module")
def cluster(s3_endpoint):
    """One local Ray for the module, started here (a start costs seconds): the runs of `segcli predict --ray
    ADDRESS` connect to it, the in-process tests use it; it stops with the module."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _images(folder: Path, n: int, bad: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        h, w = (64, 80) if i % 3 else (72, 64)  # two sizes: batches of one size and another
        blocks = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)
        image = np.kron(blocks, np.ones((h // 4, w // 4, 1), dtype=np.uint8))
        where = folder / "sub" if i % 4 == 0 else folder
        where.mkdir(exist_ok=True)
        Image.fromarray(image).save(where / f"img{i:02d}.png")
    if bad:
        (folder / "empty.png").write_bytes(b"")
        (folder / "text.jpg").write_bytes(b"not an image")


def segcli(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "segcli", *map(str, args)], capture_output=True, text=True, **kw)


def _outputs(out: Path) -> dict[str, Path]:
    return {p.relative_to(out).as_posix(): p for p in sorted(out.rglob("*")) if p.is_file()}


def _comparable(doc: dict) -> dict:
    """A JSON without what may differ (timings, paths; confidence means: float sums of one worker thread)"""
    out = {k: v for k, v in doc.items() if k not in ("timings", "outputs")}
    if "confidence" in out:
        c = out["confidence"]
        out["confidence"] = {**c, "mean": pytest.approx(c["mean"], rel=1e-5), "classes": [
            {**x, "mean": pytest.approx(x["mean"], rel=1e-5)} for x in c["classes"]]}  # fmt: skip
    return out


def test_ray_run_equals_the_local_run_and_resumes(cluster, tiny_convnext_dir, tmp_path):
    _images(tmp_path / "in", 10)
    local, distributed = tmp_path / "local", tmp_path / "ray"
    cmap = tmp_path / "groups.csv"  # the outputs for the next tools and a class map: the same on the workers
    cmap.write_text("".join(f"{i},{'a' if i < 50 else 'b'}\n" for i in range(100)))
    more = ("--save", "json,coco,vector,confidence", "--class-map", cmap)
    a = run_cli("predict", tmp_path / "in", "-m", tiny_convnext_dir, "-o", local, "--jsonl", "-q", *more)  # here
    stale = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths live under it
    (stale / "ray").mkdir()
    (stale / "ray" / "ray_current_cluster").write_text("127.0.0.1:9")  # a dead `ray start` cluster
    env = {**os.environ, "RAY_TMPDIR": str(stale)}  # plain --ray starts its own Ray: it never joins that one
    into_ray = ("predict", tmp_path / "in", "-m", tiny_convnext_dir, "-o", distributed, "--jsonl", "-q", "--ray")
    b = segcli(*into_ray, *RAY, *more, env=env)
    shutil.rmtree(stale, ignore_errors=True)
    assert a.exit_code == 1 and b.returncode == 1, b.stderr  # the two bad files
    assert [line for line in b.stderr.splitlines() if ".cc:" in line] == []  # no Ray C++ core log lines
    assert [json.loads(x)["input"] for x in b.stdout.splitlines()] == [
        json.loads(x)["input"] for x in a.stdout.splitlines()
    ]  # input order
    files_a, files_b = _outputs(local), _outputs(distributed)
    assert sorted(files_a) == sorted(files_b)
    assert len([f for f in files_a if f.endswith(".png") and not f.endswith("_confidence.png")]) == 11
    for name, path in files_a.items():
        if name.endswith("_confidence.png"):  # a worker's one thread rounds floats otherwise: a level apart at most
            here, there = (np.asarray(Image.open(p), np.int16) for p in (path, files_b[name]))
            assert np.abs(here - there).max() <= 1, name
        elif name.endswith(".png") and name != "legend.png":
            assert np.array_equal(np.asarray(Image.open(path)), np.asarray(Image.open(files_b[name]))), name
        elif name.endswith(".json") and name not in ("summary.json",):
            assert _comparable(json.loads(path.read_text())) == _comparable(json.loads(files_b[name].read_text()))
        elif name.endswith(".geojson"):
            assert path.read_bytes() == files_b[name].read_bytes(), name
    assert len([f for f in files_a if f.endswith(".geojson")]) == 10
    docs = [json.loads(p.read_text()) for n, p in files_b.items() if n.endswith(".json") and "schema" in p.read_text()]
    docs = [d for d in docs if d["schema"].startswith("segcli.prediction")]
    assert len(docs) == 10 and all({c["name"] for c in d["classes"]} <= {"a", "b"} for d in docs)
    assert all("ignored_pixels" in d and "confidence" in d for d in docs)
    summary = json.loads((distributed / "summary.json").read_text())
    assert summary["counts"] == {"total": 12, "done": 10, "skipped": 0, "failed": 2}
    # on the running cluster (the run above started and stopped a Ray of its own)
    again = segcli(*into_ray, cluster, *RAY, *more)
    statuses = [json.loads(x)["status"] for x in again.stdout.splitlines()]
    assert again.returncode == 1 and statuses.count("skipped") == 10 and statuses.count("failed") == 2
    assert not list(distributed.rglob(".*.tmp"))


def test_native_log_lines_are_dropped_and_the_rest_kept(capfd):
    from segcli.batch.ray_connect import native_log_lines_dropped

    native = b"[2026-12-02 10:23:12,986 I 5189 5189] logging.cc:303: Set ray log level from environment variable\n"
    with native_log_lines_dropped():
        os.write(2, native)
        os.write(2, b"segcli: a line of ours\n")
    with native_log_lines_dropped(active=False):  # --debug: Ray's lines shown
        os.write(2, native)
    assert capfd.readouterr().err == "segcli: a line of ours\n" + native.decode()


def _worker_pids() -> list[int]:
    out = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if "MapWorker" in line and "ray::" in line]


def test_a_killed_worker_changes_nothing(cluster, tiny_convnext_dir, tmp_path):
    _images(tmp_path / "in", 48, bad=False)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "segcli", "predict", tmp_path / "in", "-m", tiny_convnext_dir, "-o", out]
    args = [*map(str, cmd), "--jsonl", "-q", "--ray", cluster, *RAY]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline, killed = time.monotonic() + 180, None
    while killed is None and time.monotonic() < deadline and proc.poll() is None:
        pids = _worker_pids()
        done = len(list(out.rglob("img*.png"))) if out.is_dir() else 0
        if pids and done >= 4:
            killed = pids[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    stdout, stderr = proc.communicate(timeout=300)
    if killed is None:
        pytest.skip("the run finished before a worker could be killed")
    assert proc.returncode == 0, stderr.decode()[-2000:]
    inputs = [json.loads(x)["input"] for x in stdout.decode().splitlines()]
    assert len(inputs) == 48 and len(set(inputs)) == 48  # every image exactly once
    assert len(list(out.rglob("img*.png"))) == 48 and not list(out.rglob(".*.tmp"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["done"] == 48
    for png in out.rglob("img*.png"):
        assert np.asarray(Image.open(png)).shape in ((64, 80), (72, 64))  # complete


def test_segment_maps_a_ray_dataset(cluster, tiny_convnext_dir, tmp_path):
    import ray

    from segcli import Segmenter
    from segcli.ray import segment  # the public face

    _images(tmp_path / "in", 6, bad=False)
    ds = ray.data.read_images(str(tmp_path / "in"), include_paths=True, mode="RGB")
    rows = segment(ds, str(tiny_convnext_dir), workers=1).take_all()
    seg = Segmenter.from_pretrained(tiny_convnext_dir)
    assert len(rows) == 6
    for row in rows:
        path = row["path"] if os.path.isabs(row["path"]) else "/" + row["path"]
        assert np.array_equal(row["labels"], seg.predict(path)), path
        record = json.loads(row["record"])
        assert sum(c["pixels"] for c in record["classes"]) == row["labels"].size


def test_a_worker_that_cannot_start_stops_the_run(cluster, tiny_convnext_dir, tmp_path):
    """Ray recreates an actor whose constructor raises, forever: segcli's reports the reason and stops."""
    import dataclasses

    from segcli import Segmenter, batch
    from segcli.batch.ray import job_for, run
    from segcli.errors import SegcliError
    from segcli.io.inputs import discover

    _images(tmp_path / "in", 3, bad=False)
    seg = Segmenter.from_pretrained(str(tiny_convnext_dir))
    params = seg.params()
    opts = batch.Options(tmp_path / "out")
    job = job_for(seg, str(tiny_convnext_dir), params, opts, gpus=0, threads=1, dtype="float32", registry=None)
    job = dataclasses.replace(job, model=str(tmp_path / "gone"))  # the workers cannot load this one
    items = discover([str(tmp_path / "in")]).items
    summary = batch.RunSummary(tuple(seg.classes))
    with pytest.raises(SegcliError, match=r"a Ray worker cannot start: .*gone"):
        run(seg, job, items, workers=1, gpus=0, report=lambda r: None, should_stop=lambda: False, summary=summary)
    assert not list((tmp_path / "out").rglob("*.png"))


@pytest.fixture()
def blackhole():
    """A TCP port that accepts connections and never answers (a firewall, a wrong service, a hung head)."""
    server = socket.create_server(("0.0.0.0", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                held.append(server.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    server.close()
    for c in held:
        c.close()


def _probes() -> list[int]:
    out = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if "ray.init(address=sys.argv[1]" in line]


@pytest.mark.parametrize("stop", [None, signal.SIGTERM])
def test_an_address_that_never_answers_is_one_line_in_bounded_time(
    blackhole, tiny_convnext_dir, tmp_path, stop, request
):
    """Ray's own connect retries for minutes in native code a SIGTERM cannot interrupt; segcli joins within
    $SEGCLI_RAY_CONNECT_TIMEOUT, and a SIGTERM while it waits ends the command (143), probe and all."""
    photo(tmp_path / "in" / "a.png")
    env = {**os.environ, "SEGCLI_RAY_CONNECT_TIMEOUT": "1" if stop is None else "600"}
    cmd = [sys.executable, "-m", "segcli", "predict", tmp_path / "in", "-m", tiny_convnext_dir, "-o", tmp_path / "o"]
    proc = subprocess.Popen([*map(str, cmd), f"--ray={blackhole}"], stderr=subprocess.PIPE, text=True, env=env)
    request.addfinalizer(proc.kill)
    if stop is not None:
        deadline = time.monotonic() + 120
        while not _probes() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert _probes(), "segcli never started joining the cluster"
        proc.send_signal(stop)
    _, stderr = proc.communicate(timeout=120)  # Ray's own wait: 9 minutes and more
    if stop is None:
        assert proc.returncode == 2, stderr
        assert f"--ray {blackhole}: no Ray cluster answered there within 1 s" in stderr
    else:
        assert proc.returncode == 128 + stop, stderr
    assert "Traceback" not in stderr and not _probes()


def test_video_frames_are_read_on_the_workers_as_locally(cluster, tiny_convnext_dir, tmp_path):
    pytest.importorskip("av", reason="PyAV is not installed (the [video] extra)")
    from helpers import encode_video

    video = encode_video(tmp_path / "clip.mp4", n=9)  # chunks of frames: each worker seeks to its own
    args = ("predict", video, "-m", tiny_convnext_dir, "--resize", "none", "--save", "json,video", "--jsonl", "-q")
    a = run_cli(*args, "-o", tmp_path / "local")  # here, in this process
    b = segcli(*args, "-o", tmp_path / "ray", "--ray", cluster, *RAY)
    assert a.exit_code == 0 and b.returncode == 0, b.stderr
    frames = [json.loads(x)["frame"]["index"] for x in b.stdout.splitlines()]
    assert frames == list(range(9))
    for i in range(9):
        name = f"clip/{i:06d}.png"
        assert np.array_equal(
            np.asarray(Image.open(tmp_path / "local" / name)), np.asarray(Image.open(tmp_path / "ray" / name))
        )
    assert (tmp_path / "local" / "clip_areas.csv").read_text() == (tmp_path / "ray" / "clip_areas.csv").read_text()


# the driver of a Ray run, with io.remote.read broken: an object read there (not on a worker) fails the run
DRIVER_CANNOT_READ = """
import sys
import segcli.io.remote as remote
def read(obj, opts):
    raise AssertionError(f"{obj.url} read by the driver")
remote.read = read
from segcli.cli.app import main
sys.argv[0] = "segcli"
main()
"""


def test_objects_in_a_bucket_are_read_on_the_workers(cluster, s3_endpoint, tiny_convnext_dir, tmp_path):
    if s3_endpoint is None:
        pytest.skip("moto's server or s3fs is not installed")
    import boto3

    _images(tmp_path / "in", 6, bad=False)
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket="ray-inputs")
    for p in sorted((tmp_path / "in").rglob("*.png")):
        client.put_object(
            Bucket="ray-inputs", Key=f"x/{p.relative_to(tmp_path / 'in').as_posix()}", Body=p.read_bytes()
        )
    args = ("predict", "s3://ray-inputs/x/", "-m", tiny_convnext_dir, "--resize", "none", "--jsonl", "-q")
    a = run_cli(*args, "-o", tmp_path / "local")  # here, in this process
    # one Ray run, objects in and out: the workers read the inputs and upload what they make
    cmd = [sys.executable, "-c", DRIVER_CANNOT_READ, *map(str, args), "-o", "s3://ray-inputs/masks/"]
    b = subprocess.run([*cmd, "--ray", cluster, *RAY], capture_output=True, text=True)
    assert a.exit_code == 0 and b.returncode == 0, b.stderr
    records = [json.loads(x) for x in b.stdout.splitlines()]
    assert [d["status"] for d in records] == ["done"] * 6 and all(d["source"]["etag"] for d in records)
    local = _outputs(tmp_path / "local")
    listed = client.list_objects_v2(Bucket="ray-inputs", Prefix="masks/")["Contents"]
    uploaded = {o["Key"].removeprefix("masks/") for o in listed}
    masks = [k for k in local if k.endswith(".png") and k != "legend.png"]
    assert len(masks) == 6 and set(local) == uploaded
    for k in masks:
        body = client.get_object(Bucket="ray-inputs", Key=f"masks/{k}")["Body"].read()
        assert np.array_equal(np.asarray(Image.open(local[k])), np.asarray(Image.open(io.BytesIO(body)))), k
