"""Inputs from URLs (io.remote, the [remote] extra) against real servers on 127.0.0.1: moto's S3-API server
(listing, globs, reading, a missing key, keys that would escape --out, a changed object redone) and an HTTP
server (reading, 404, 403, a slow server timing out after bounded retries, a redirect to file://, a bomb)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from helpers import photo
from PIL import Image
from servers import http_site, moto_server, s3_env

from segcli.errors import ImageError, UsageError
from segcli.io.listing import relative
from segcli.io.remote import RemoteObject, RemoteOptions, check_scheme, read, redact

pytest.importorskip("s3fs", reason="s3fs is not installed (the [remote] extra)")
pytest.importorskip("moto.server", reason="moto's server is not installed (tests run against it)")

SMALL = ("--resize", "none")  # the images at their own 24×32


@pytest.fixture(scope="module")
def endpoint():
    with moto_server() as url:
        yield url


@pytest.fixture
def s3(endpoint, monkeypatch, request):
    """A boto3 client of the moto server with a fresh bucket (named after the test); the process's
    environment points the store's standard variables at the server."""
    import boto3

    for k, v in s3_env(endpoint).items():
        monkeypatch.setenv(k, v)
    client = boto3.client("s3", endpoint_url=endpoint)
    bucket = request.node.name.lower().replace("_", "-")[:50].strip("-")
    client.create_bucket(Bucket=bucket)
    client.bucket = bucket
    return client


def _png(seed: int, h: int = 24, w: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.open(photo(Path(f"/tmp/segcli-remote-{seed}.png"), h, w, seed=seed)).save(buf, format="PNG")
    return buf.getvalue()


def _put(s3, key: str, data: bytes, disk: Path | None = None) -> None:
    s3.put_object(Bucket=s3.bucket, Key=key, Body=data)
    if disk is not None:
        (disk / key).parent.mkdir(parents=True, exist_ok=True)
        (disk / key).write_bytes(data)


def _records(stdout: str) -> dict[str, dict]:
    return {d["input"]: d for d in map(json.loads, stdout.splitlines())}


def _masks(out: Path) -> dict[str, np.ndarray]:
    return {p.relative_to(out).as_posix(): np.asarray(Image.open(p)) for p in sorted(out.rglob("*.png"))
            if p.name != "legend.png"}  # fmt: skip


def test_an_s3_prefix_gives_what_the_same_files_on_disk_give(tmp_path, cli, s3, tiny_convnext_dir):
    disk = tmp_path / "disk"
    _put(s3, "photos/a.png", _png(1), disk)
    _put(s3, "photos/sub/b.png", _png(2), disk)
    _put(s3, "photos/.hidden.png", _png(3))  # hidden names and other extensions are left out, as on disk
    _put(s3, "photos/notes.txt", b"text")
    prefix = f"s3://{s3.bucket}/photos/"
    r = cli("predict", prefix, "-o", tmp_path / "s3", "-m", tiny_convnext_dir, *SMALL, "--jsonl")
    assert r.exit_code == 0, r.output
    records = _records(r.stdout)
    assert set(records) == {prefix + "a.png", prefix + "sub/b.png"}
    doc = records[prefix + "sub/b.png"]
    head = s3.head_object(Bucket=s3.bucket, Key="photos/sub/b.png")
    assert doc["source"] == {"url": prefix + "sub/b.png", "etag": head["ETag"], "last_modified": None,
                             "bytes": head["ContentLength"]}  # fmt: skip
    assert doc["name"] == "sub/b" and json.loads((tmp_path / "s3" / "sub" / "b.json").read_text())["source"]
    r = cli("predict", disk / "photos", "-o", tmp_path / "disk-out", "-m", tiny_convnext_dir, *SMALL)
    assert r.exit_code == 0, r.output
    got, want = _masks(tmp_path / "s3"), _masks(tmp_path / "disk-out")
    assert set(got) == set(want) == {"a.png", "sub/b.png"}
    assert all(np.array_equal(got[k], want[k]) for k in want)

    # resume: nothing redone; an object replaced in the bucket (a new ETag) is redone, alone
    r = cli("predict", prefix, "-o", tmp_path / "s3", "-m", tiny_convnext_dir, *SMALL, "--jsonl")
    assert {d["status"] for d in _records(r.stdout).values()} == {"skipped"}
    _put(s3, "photos/a.png", _png(7))
    r = cli("predict", prefix, "-o", tmp_path / "s3", "-m", tiny_convnext_dir, *SMALL, "--jsonl")
    status = {k.removeprefix(prefix): d["status"] for k, d in _records(r.stdout).items()}
    assert status == {"a.png": "done", "sub/b.png": "skipped"}, r.output


def test_globs_url_lists_and_a_missing_key(tmp_path, cli, s3, tiny_convnext_dir):
    for key in ("photos/a.png", "photos/sub/b.png", "photos/sub/c.jpg", "other/d.png"):
        _put(s3, key, _png(len(key)))
    base = f"s3://{s3.bucket}"
    glob = f"{base}/photos/**/*.png"
    r = cli("predict", glob, "-o", tmp_path / "glob", "-m", tiny_convnext_dir, *SMALL, "--jsonl", "--report")
    assert r.exit_code == 0, r.output
    assert set(_records(r.stdout)) == {f"{base}/photos/a.png", f"{base}/photos/sub/b.png"}
    page = (tmp_path / "glob" / "index.html").read_text()  # the report links to the objects themselves
    assert f'href="{base}/photos/sub/b.png"' in page and "file://" not in page
    assert sorted(p.relative_to(tmp_path / "glob").as_posix() for p in (tmp_path / "glob").rglob("*.json")) == [
        "a.json", "classes.json", "sub/b.json", "summary.json"]  # fmt: skip
    r = cli("predict", f"{base}/photos", "--no-recursive", "-o", tmp_path / "flat", "-m", tiny_convnext_dir, *SMALL,
            "--jsonl")  # fmt: skip
    assert set(_records(r.stdout)) == {f"{base}/photos/a.png"}, r.output  # a prefix named without its slash
    listed = f"{base}/photos/a.png\n{base}/missing.png\n{base}/other/d.png\n"
    r = cli("predict", "-", "-o", tmp_path / "list", "-m", tiny_convnext_dir, *SMALL, "--jsonl", input=listed)
    assert r.exit_code == 1, r.output  # a partial failure
    assert f"{base}/missing.png: cannot be read (no such object (404))" in r.stderr
    done = {k for k, d in _records(r.stdout).items() if d["status"] == "done"}
    assert done == {f"{base}/photos/a.png", f"{base}/other/d.png"}
    assert (tmp_path / "list" / "photos" / "a.png").is_file() and (tmp_path / "list" / "other" / "d.png").is_file()


def test_keys_that_would_leave_out_are_refused(tmp_path, cli, s3, tiny_convnext_dir):
    for key in ("photos/../../../escaped.png", "photos//double.png", "photos/fine.png"):
        _put(s3, key, _png(5))
    out = tmp_path / "deep" / "out"
    r = cli("predict", f"s3://{s3.bucket}/photos/", "-o", out, "-m", tiny_convnext_dir, *SMALL)
    assert r.exit_code == 1, r.output
    assert r.stderr.count("its name has an empty, '.' or '..' part") == 2
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png"))
    assert written == ["deep/out/fine.png", "deep/out/legend.png"]


def test_a_changed_endpoint_is_reached_in_the_same_process(tmp_path, cli, s3, tiny_convnext_dir, monkeypatch):
    """The store's variables are read again when they change (another module's server, a Python user
    switching profiles): a filesystem made for an endpoint that is gone is not reused."""
    _put(s3, "photos/a.png", _png(1))
    prefix = f"s3://{s3.bucket}/photos/"
    args = ("-m", tiny_convnext_dir, *SMALL)
    real = s3.meta.endpoint_url
    for k in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.setenv(k, "http://127.0.0.1:9")  # the discard port: nothing answers
    r = cli("predict", prefix, "-o", tmp_path / "gone", *args)
    assert r.exit_code == 1 and "cannot be listed" in r.stderr
    for k in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.setenv(k, real)
    r = cli("predict", prefix, "-o", tmp_path / "back", *args)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "back" / "a.png").is_file()


def test_file_urls_unknown_schemes_and_credentials_are_refused(tmp_path, cli, tiny_convnext_dir):
    image = photo(tmp_path / "x.png")
    r = cli("predict", f"file://{image}", "ftp://host/y.png", "-o", tmp_path / "out", "-m", tiny_convnext_dir)
    assert r.exit_code == 1, r.output
    assert f"file://{image}: file:// URLs are not read" in r.stderr and "ftp:// is not a store" in r.stderr
    with pytest.raises(UsageError, match="file:// URLs"):
        check_scheme("FILE:///etc/passwd")
    r = cli("predict", "https://me:secret@host/x.png", "-o", tmp_path / "out", "-m", tiny_convnext_dir)
    assert r.exit_code == 1 and "credentials in a URL are not accepted" in r.stderr and "secret" not in r.output
    assert "secret" not in (tmp_path / "out" / "summary.json").read_text()


def test_http_reads_and_each_failure_is_one_line(tmp_path, cli, tiny_convnext_dir):
    big = io.BytesIO()
    Image.new("RGB", (200, 100)).save(big, format="PNG")  # 20,000 pixels: over --max-pixels 10000
    with http_site() as site:
        good = site.file("/img/good.png", _png(11), etag='"v1"')
        bomb = site.file("/img/big.png", big.getvalue())
        slow = site.file("/img/slow.png", _png(12))
        site.slow.add("/img/slow.png")
        site.routes["/img/forbidden.png"] = (403, {}, b"no")
        site.routes["/img/moved.png"] = (302, {"Location": "file:///etc/passwd"}, b"")
        names = ["good", "big", "slow", "forbidden", "moved", "missing"]
        listed = "".join(f"{site.url}/img/{n}.png\n" for n in names)
        args = ("--timeout", "0.5", "--retries", "1", "--max-pixels", "10000", "--jsonl")
        t = time.monotonic()
        r = cli("predict", "-", "-o", tmp_path / "out", "-m", tiny_convnext_dir, *SMALL, *args, input=listed)
        elapsed = time.monotonic() - t
        assert r.exit_code == 1, r.output
        lines = [line for line in r.stderr.splitlines() if "error:" in line]
        assert len(lines) == 5, r.stderr  # one line per failed object; the good one done
        expect = {
            "big": "20,000 pixels exceeds the limit of 10,000",
            "slow": "no answer within 0.5 s (--timeout)",
            "forbidden": "access denied (403)",
            "moved": "redirected to a URL that is not http(s): not followed",
            "missing": "no such object (404)",
        }
        for name, text in expect.items():
            assert any(f"/img/{name}.png" in line and text in line for line in lines), (name, r.stderr)
        assert site.hits["/img/slow.png"] == 1 + 2  # HEAD once, GET tried twice (--retries 1)
        assert elapsed < 30  # timeouts bounded (2 × 0.5 s and a 0.5 s pause for the slow one)
        doc = _records(r.stdout)[good]
        assert doc["status"] == "done" and doc["source"]["etag"] == '"v1"' and doc["name"] == "good"
        assert slow not in {k for k, d in _records(r.stdout).items() if d["status"] == "done"} and bomb


def test_reads_stop_at_the_byte_limit():
    with http_site() as site:
        url = site.file("/x.bin", b"x" * 1000)
        opts = RemoteOptions(timeout=5, retries=0, max_bytes=100)
        with pytest.raises(ImageError, match="1,000 bytes exceeds the 100-byte read limit"):
            read(RemoteObject(url, 1000, None), opts)  # the listed size: refused before any GET
        assert site.hits["/x.bin"] == 0
        with pytest.raises(ImageError, match="more than the 100-byte read limit"):
            read(RemoteObject(url, None, None), opts)  # a stream cut at 101 bytes
        assert read(RemoteObject(url, None, None), RemoteOptions(5, 0, 1000)) == b"x" * 1000


def test_relative_names_of_objects():
    objs = [
        (RemoteObject("s3://b/photos/a/x.jpg", 1, None), "s3://b/photos"),
        (RemoteObject("s3://b/other/y.jpg", 1, None), "s3://b/other"),
        (RemoteObject("https://h/img?id=1", 1, None), "https://h"),
        (RemoteObject("https://h/img?id=2", 1, None), "https://h"),
    ]
    named, errors = relative(objs[:2], full=False)
    assert [str(rel) for _, rel in named] == ["photos/a/x.jpg", "other/y.jpg"] and not errors
    named, _ = relative(objs[:1], full=True)  # beside local inputs: scheme and bucket kept
    assert [str(rel) for _, rel in named] == ["s3/b/photos/a/x.jpg"]
    named, _ = relative(objs[2:], full=False)
    rels = [rel for _, rel in named]
    assert len(set(rels)) == 2 and all(r.parent == PurePosixPath(".") and r.name.startswith("img_") for r in rels)


def test_outputs_to_a_bucket_are_uploaded_and_resume_from_the_bucket(tmp_path, cli, s3, tiny_convnext_dir, monkeypatch):
    disk = tmp_path / "disk"
    _put(s3, "photos/a.png", _png(1), disk)
    _put(s3, "photos/sub/b.png", _png(2), disk)
    base = f"s3://{s3.bucket}"
    run = ("predict", f"{base}/photos/", "-o", f"{base}/masks/", "-m", tiny_convnext_dir, *SMALL, "--jsonl")
    r = cli(*run)
    assert r.exit_code == 0, r.output
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=s3.bucket, Prefix="masks/")["Contents"]}
    assert keys == {f"masks/{k}" for k in ("a.png", "a.json", "sub/b.png", "sub/b.json", "summary.json",
                                           "legend.png", "classes.json")}  # fmt: skip
    doc = _records(r.stdout)[f"{base}/photos/sub/b.png"]
    assert doc["outputs"] == {"png": f"{base}/masks/sub/b.png", "json": f"{base}/masks/sub/b.json"}
    uploaded = json.loads(s3.get_object(Bucket=s3.bucket, Key="masks/sub/b.json")["Body"].read())
    assert uploaded["outputs"] == doc["outputs"] and uploaded["source"]["url"] == f"{base}/photos/sub/b.png"
    summary = json.loads(s3.get_object(Bucket=s3.bucket, Key="masks/summary.json")["Body"].read())
    assert summary["counts"]["done"] == 2 and summary["out"] == f"{base}/masks"
    r = cli("predict", disk / "photos", "-o", tmp_path / "local", "-m", tiny_convnext_dir, *SMALL)
    for k in ("a.png", "sub/b.png"):  # the bucket's masks are the local run's
        body = s3.get_object(Bucket=s3.bucket, Key=f"masks/{k}")["Body"].read()
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(body))), np.asarray(Image.open(tmp_path / "local" / k)))

    # another machine (an empty cache, no staging folder): the bucket says what is done
    monkeypatch.setenv("SEGCLI_CACHE", str(tmp_path / "other-cache"))
    r = cli(*run)
    assert {d["status"] for d in _records(r.stdout).values()} == {"skipped"}, r.output
    s3.delete_object(Bucket=s3.bucket, Key="masks/sub/b.json")  # an image's output missing there: made again
    r = cli(*run)
    status = {k.removeprefix(f"{base}/photos/"): d["status"] for k, d in _records(r.stdout).items()}
    assert status == {"a.png": "skipped", "sub/b.png": "done"}, r.output
    s3.delete_object(Bucket=s3.bucket, Key="masks/sub/b.png")  # the bucket is the truth, not the staging copy
    r = cli(*run)
    status = {k.removeprefix(f"{base}/photos/"): d["status"] for k, d in _records(r.stdout).items()}
    assert status == {"a.png": "skipped", "sub/b.png": "done"}, r.output


def test_outputs_to_a_url_that_cannot_take_them(tmp_path, cli, s3, tiny_convnext_dir):
    _put(s3, "photos/a.png", _png(1))
    base = f"s3://{s3.bucket}"
    args = ("-m", tiny_convnext_dir, *SMALL)
    r = cli("predict", f"{base}/photos/", "-o", f"{base}/photos/masks/", *args)
    assert r.exit_code == 2 and "overlaps the input prefix" in r.output  # its outputs would be listed as inputs
    r = cli("predict", f"{base}/photos/", "-o", f"{base}/masks/", "--report", *args)
    assert r.exit_code == 2 and "--report with --out" in r.output
    r = cli("predict", f"{base}/photos/", "-o", "https://host/masks/", *args)
    assert r.exit_code == 2 and "HTTP servers take no writes" in r.output
    r = cli("predict", f"{base}/photos/", "-o", "s3://no-such-bucket-here/masks/", *args)
    line = "cannot upload a.json to s3://no-such-bucket-here/masks/a.json (no such bucket)"  # the JSON goes first
    assert r.exit_code == 1 and line in r.stderr, r.output


def test_signatures_are_redacted_and_transient_failures_classified():
    signed = "https://b.s3.amazonaws.com/k/x.jpg?X-Amz-Credential=AKIA1%2F2&X-Amz-Date=1&X-Amz-Signature=abc123"
    assert redact(signed) == "https://b.s3.amazonaws.com/k/x.jpg?X-Amz-Credential=…&X-Amz-Date=1&X-Amz-Signature=…"
    assert redact("https://me:pw@host/a?sig=s3cret&v=2") == "https://…@host/a?sig=…&v=2"
    import errno

    from segcli.io.remote import _transient, with_retries

    wrapped = FileNotFoundError("https://h/x")  # fsspec's HEAD: any failure becomes FileNotFoundError
    wrapped.__cause__ = TimeoutError()
    for error, transient in [(OSError(errno.EBUSY, "SlowDown"), True), (OSError(errno.EREMOTEIO, "500"), True),
                             (wrapped, True), (FileNotFoundError("k"), False), (PermissionError("403"), False),
                             (ConnectionResetError(), True), (ValueError("bad"), False)]:  # fmt: skip
        assert _transient(error) is transient, error
    calls, pauses = [], []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise OSError(errno.EBUSY, "SlowDown")
        return "ok"

    assert with_retries(flaky, RemoteOptions(retries=2), sleep=pauses.append) == "ok" and pauses == [0.5, 1.0]
    calls.clear()
    with pytest.raises(OSError):
        with_retries(flaky, RemoteOptions(retries=1), sleep=pauses.append)  # 2 tries: still failing
    with pytest.raises(PermissionError):
        with_retries(lambda: (_ for _ in ()).throw(PermissionError("403")), RemoteOptions(), sleep=pauses.append)
    assert pauses == [0.5, 1.0, 0.5]  # a refusal is not tried again


def test_an_http_index_page_lists_the_images_inside_its_folder(tmp_path, cli, tiny_convnext_dir):
    with http_site() as site:
        site.file("/dir/a.png", _png(21))
        site.file("/dir/sub/b.png", _png(22))
        site.file("/dir/.hidden/c.png", _png(23))
        site.file("/outside.png", _png(24))
        links = ["a.png", "sub/b.png", ".hidden/c.png", "../outside.png", "http://elsewhere.invalid/x.png", "x.txt"]
        page = "".join(f'<a href="{u}">{u}</a>' for u in links).encode()
        site.routes["/dir/"] = (200, {"Content-Type": "text/html"}, page)
        r = cli("predict", f"{site.url}/dir/", site.url, "-o", tmp_path / "out", "-m", tiny_convnext_dir, *SMALL,
                "--jsonl")  # fmt: skip
        assert r.exit_code == 1, r.output  # the bare host: its "/" is a 404, one line
        done = {k for k, d in _records(r.stdout).items() if d["status"] == "done"}
        assert done == {f"{site.url}/dir/a.png", f"{site.url}/dir/sub/b.png"}
        assert f"{site.url}: cannot be read (no such object (404))" in r.stderr and "Traceback" not in r.output
        assert (tmp_path / "out" / "sub" / "b.png").is_file()
