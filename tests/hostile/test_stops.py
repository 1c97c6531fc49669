"""Stopping from outside: SIGTERM / SIGHUP, a closed pipe, an unreachable Hub, offline mode."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import no_hang, photo


def _run_segcli(args: list, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "segcli", *map(str, args)], **kw)


@pytest.mark.parametrize("signum, code", [(15, 143), (1, 129)])
@pytest.mark.slow
def test_sigterm_and_sighup_stop_like_ctrl_c(model, tmp_path, signum, code):
    src = tmp_path / "in"
    for i in range(40):
        photo(src / f"{i:02d}.png", 64, 64, seed=i)
    out = tmp_path / "out"
    proc = _run_segcli(["predict", src, "-m", model, "-o", out, "--resize", "1024x1024"], stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not list(out.glob("*.png")) and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err.decode()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["counts"]["done"] < 40
    assert not list(out.glob(".*.tmp"))
    for rec in (json.loads(p.read_text()) for p in out.glob("[0-9]*.json")):
        assert Path(rec["outputs"]["png"]).is_file()  # every JSON written has its PNG


@pytest.mark.slow  # a real pipeline of processes
def test_closed_jsonl_pipe_keeps_the_summary(model, tmp_path):
    src = tmp_path / "in"
    for i in range(12):
        photo(src / f"{i:02d}.png", 32, 32, seed=i)
    out = tmp_path / "out"
    cmd = f"{sys.executable} -m segcli predict {src} -m {model} -o {out} --jsonl -q | head -1"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, timeout=300)
    assert done.returncode == 141, done.stderr
    assert json.loads(done.stdout)["status"] == "done" and "Traceback" not in done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["counts"]["done"] >= 1


def test_unreachable_hub_is_one_quick_error(cli, tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with no_hang(60):  # no minutes of retries
        r = cli("download", "someone/some-model")
    lines = r.stderr.splitlines()
    assert r.exit_code == 2 and "cannot be reached" in lines[0] and "Connection refused" in lines[0], r.stderr
    assert "segcli download" not in r.stderr  # the command that failed does not suggest itself
    assert len(lines) == 3 and "HF_HUB_OFFLINE=1" in lines[2]


@pytest.mark.slow  # waits out the 10 s read timeout
def test_a_hub_that_never_answers_is_one_error_in_bounded_time(cli, monkeypatch):
    """A server that accepts the connection and sends nothing: 422 s of silence before the read check."""
    import socket
    import threading

    server, held = socket.create_server(("127.0.0.1", 0)), []
    threading.Thread(target=lambda: [held.append(server.accept()[0]) for _ in range(100)], daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1.5")  # huggingface_hub's setting (10 s by default) bounds ours
    try:
        with no_hang(60):
            r = cli("download", "someone/some-model")
    finally:
        server.close()
    assert r.exit_code == 2 and "accepts connections but sent no answer within 1.5 s" in r.stderr, r.stderr
    assert len(held) == 2  # the connect check and the HTTP one; none by huggingface_hub (nor its retries)


def test_url_downloads_honour_offline(monkeypatch, tmp_path):
    from segcli.errors import DownloadError
    from segcli.loading.hub import fetch_url

    (tmp_path / "x.pth").write_bytes(b"data")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError, match="HF_HUB_OFFLINE is set"):
        fetch_url((tmp_path / "x.pth").as_uri(), tmp_path / "copy.pth")
    assert not (tmp_path / "copy.pth").exists()
