"""Downloads through the real huggingface_hub client against a local Hub (tests/fakehub.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_sources import TINY_ENTRY, write_registry

from segcli import Segmenter
from segcli.errors import DownloadError, IntegrityError

REPO = "testorg/tiny-upernet"


@pytest.fixture()
def files(tiny_convnext_dir) -> dict[str, bytes]:
    return {
        name: (tiny_convnext_dir / name).read_bytes()
        for name in ("model.safetensors", "config.json", "preprocessor_config.json")
    }


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def registry(tmp_path: Path, sha256: str = "", revision: str = "main") -> Path:
    text = TINY_ENTRY.format(extra="").replace('sha256 = ""', f'sha256 = "{sha256}"')
    return write_registry(tmp_path / "reg.toml", body=text.replace('revision = "main"', f'revision = "{revision}"'))


def test_download_into_hf_home_and_verify(cli, fake_hub, files, tmp_path, isolated_env):
    fake_hub.add(REPO, files)
    reg = registry(tmp_path, sha(files["model.safetensors"]))
    r = cli("--registry", str(reg), "download", "tiny")
    assert r.exit_code == 0, r.stderr
    name, path, digest = r.stdout.strip().split("\t")
    assert name == "tiny" and digest == sha(files["model.safetensors"])
    assert Path(path).read_bytes() == files["model.safetensors"]
    assert Path(path).is_relative_to(isolated_env / "hf" / "hub" / "models--testorg--tiny-upernet")
    # now cached: `models` says so and a second download does not fetch the file again
    assert fake_hub.downloads("model.safetensors") == 1
    assert cli("--registry", str(reg), "download", "tiny").exit_code == 0
    assert fake_hub.downloads("model.safetensors") == 1
    listing = cli("--registry", str(reg), "models", "--json")
    import json

    row = next(m for m in json.loads(listing.stdout) if m["name"] == "tiny")
    assert row["cached"] is True and row["cached_path"] == path


def test_hf_hub_cache_is_honoured(cli, fake_hub, files, tmp_path, monkeypatch):
    fake_hub.add(REPO, files)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    r = cli("--registry", str(registry(tmp_path)), "download", "tiny")
    assert r.exit_code == 0, r.stderr
    assert Path(r.stdout.split("\t")[1]).is_relative_to(tmp_path / "elsewhere")


def test_revision_is_fetched_not_main(fake_hub, files, tmp_path):
    other = dict(files, **{"model.safetensors": files["model.safetensors"] + b""})
    pr = files["model.safetensors"]
    fake_hub.add(REPO, {**other, "model.safetensors": b"main has something else"}, revision="main")
    fake_hub.add(REPO, {**files, "model.safetensors": pr}, revision="refs/pr/1")
    reg = registry(tmp_path, sha(pr), revision="refs/pr/1")
    seg = Segmenter.from_pretrained("tiny", registry=reg)  # downloads on first use
    assert seg.info.origin.revision == "refs/pr/1" and seg.info.origin.sha256 == sha(pr)
    assert any("refs%2Fpr%2F1" in p or "refs/pr/1" in p for _, p, _ in fake_hub.requests)


def test_sha256_mismatch_is_an_error_and_deletes_nothing(cli, fake_hub, files, tmp_path, isolated_env):
    fake_hub.add(REPO, files)
    reg = registry(tmp_path, "0" * 64)
    r = cli("--registry", str(reg), "download", "tiny")
    assert r.exit_code == 2
    assert "sha256 mismatch" in r.stderr and "0" * 64 in r.stderr and sha(files["model.safetensors"]) in r.stderr
    assert "nothing was deleted" in r.stderr
    cached = list((isolated_env / "hf" / "hub").rglob("model.safetensors"))
    assert len(cached) == 1 and cached[0].read_bytes() == files["model.safetensors"]
    with pytest.raises(IntegrityError):
        Segmenter.from_pretrained("tiny", registry=reg)


def test_offline_with_nothing_cached(cli, fake_hub, files, tmp_path, monkeypatch):
    fake_hub.add(REPO, files)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    reg = registry(tmp_path)
    r = cli("--registry", str(reg), "download", "tiny")
    assert r.exit_code == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 3  # what is missing and what to do, no traceback
    assert lines[0].startswith(f"segcli: error: {REPO}@main:model.safetensors is not in the Hugging Face cache")
    assert lines[0].endswith("and HF_HUB_OFFLINE is set")
    assert "run this command again where the Hub is reachable" in lines[1] and "HF_HUB_OFFLINE=1" in lines[2]
    assert "segcli download" not in r.stderr
    assert fake_hub.requests == []  # offline means no request at all
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    pred = cli("--registry", str(reg), "predict", str(tmp_path), "-o", str(tmp_path / "out"), "-m", "tiny")
    lines = pred.stderr.strip().splitlines()
    assert pred.exit_code == 2 and lines[0].endswith("and HF_HUB_OFFLINE is set") and len(lines) == 4
    assert "where the Hub is reachable, fetch it into the cache:  segcli download tiny" in lines[1]
    assert "HF_HUB_OFFLINE=1" in lines[2] and "--model DIR" in lines[3]


def test_offline_uses_the_cache(cli, fake_hub, files, tmp_path, monkeypatch):
    fake_hub.add(REPO, files)
    reg = registry(tmp_path, sha(files["model.safetensors"]))
    assert cli("--registry", str(reg), "download", "tiny").exit_code == 0
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    n = len(fake_hub.requests)
    seg = Segmenter.from_pretrained("tiny", registry=reg)
    assert seg.num_classes == 150 and len(fake_hub.requests) == n


def test_pinned_and_cached_needs_no_network(cli, fake_hub, files, tmp_path, monkeypatch):
    """A cached file matching the pinned sha256 is used without a request, even with a dead endpoint."""
    fake_hub.add(REPO, files)
    reg = registry(tmp_path, sha(files["model.safetensors"]))
    assert cli("--registry", str(reg), "download", "tiny").exit_code == 0
    n = len(fake_hub.requests)
    assert Segmenter.from_pretrained("tiny", registry=reg).num_classes == 150
    assert len(fake_hub.requests) == n
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert Segmenter.from_pretrained("tiny", registry=reg).num_classes == 150


def test_unreachable_hub(tmp_path, monkeypatch):
    """huggingface_hub retries a refused connection with backoff (~23 s) before this error."""
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused
    with pytest.raises(DownloadError, match="cannot be reached"):
        Segmenter.from_pretrained("tiny", registry=registry(tmp_path))


def test_hf_token_is_sent(cli, fake_hub, files, tmp_path, monkeypatch):
    fake_hub.add(REPO, files)
    monkeypatch.setenv("HF_TOKEN", "hf_secret_for_test")
    assert cli("--registry", str(registry(tmp_path)), "download", "tiny").exit_code == 0
    assert all(
        h.get("authorization") == "Bearer hf_secret_for_test" or h.get("Authorization") == "Bearer hf_secret_for_test"
        for _, path, h in fake_hub.requests
        if path != "/"  # segcli's check that the server answers at all: it sends no token
    )
    assert [m for m, path, h in fake_hub.requests if path == "/" and not h.get("authorization")] == ["HEAD"]


def test_hub_repo_id_source(cli, fake_hub, files, tmp_path):
    """owner/name[@revision] not in the registry: config.json + weights (+ preprocessor) from the repo."""
    fake_hub.add("someone/finetuned", {k: v for k, v in files.items() if k != "preprocessor_config.json"})
    fake_hub.add("someone/finetuned", files, revision="v2")
    seg = Segmenter.from_pretrained("someone/finetuned")  # no preprocessor_config.json: Hub defaults
    assert seg.info.origin.kind == "hub" and seg.info.input_size == (512, 512)
    seg2 = Segmenter.from_pretrained("someone/finetuned@v2")
    assert seg2.info.origin.revision == "v2" and seg2.info.name == "someone/finetuned@v2"
    r = cli("download", "someone/finetuned@v2")
    assert r.exit_code == 0 and r.stdout.startswith("someone/finetuned@v2\t")


@pytest.mark.parametrize(
    "source, message",
    [
        ("nobody/nothing", "repository 'nobody/nothing' not found"),
        ("someone/finetuned@v9", "revision 'v9' not found"),
    ],
)
def test_hub_errors(fake_hub, files, source, message):
    fake_hub.add("someone/finetuned", files)
    with pytest.raises(DownloadError, match=message):
        Segmenter.from_pretrained(source)


def test_download_usage_errors(cli, tmp_path):
    r = cli("download")
    assert r.exit_code == 2 and "name at least one model" in r.stderr
    r = cli("download", "not-a-model")
    assert r.exit_code == 2 and "unknown model(s): not-a-model" in r.stderr
