"""`--model` / `from_pretrained` sources → (ModelInfo, local weights file).

A source is, in this order of precedence:
  1. an existing local directory with config.json + model.safetensors (+ preprocessor_config.json), as
     transformers' `save_pretrained` writes them — or a .safetensors file with config.json beside it;
  2. a registry name (weights.toml, plus the user registry);
  3. a Hub repository id `owner/name` with an optional `@revision` (a registry entry with the same repo,
     and revision when one is given, is used with its pinned sha256).
An `.onnx` file exported by `segcli export` (with its sidecar JSON) runs through onnxruntime.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import (
    CheckpointError,
    ConfigError,
    DownloadError,
    EntryMissingError,
    IntegrityError,
    ManualDownloadError,
    ModelNotFoundError,
    NeedsConversionError,
)
from .checkpoint import shard_names
from .formats import hf, native, pth, sidecar
from .formats.common import read_json
from .hub import fetch, fetch_url, file_sha256, segcli_cache, try_cached, verify
from .info import ModelInfo, Origin
from .registry import FORMATS, ModelSpec

REPO_ID = re.compile(r"(?!.*\.\.)(?!.*\.$)[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")
WEIGHTS = native.WEIGHTS
INDEX = "model.safetensors.index.json"
PICKLES = ("pytorch_model.bin", "model.pth", "model.pt")


@dataclass(frozen=True)
class Resolved:
    info: ModelInfo
    weights: Path


def read_info(config: Path, preprocessor: Path | None, name: str, origin: Origin) -> ModelInfo:
    """ModelInfo of a config.json: segcli's own format when it says so, else a transformers config."""
    cfg = read_json(config)
    reader = native.read_info if "format" in cfg else hf.read_info
    return reader(cfg, config, preprocessor, name, origin)


def _local_dir(directory: Path, weights: Path | None = None) -> Resolved:
    config = directory / "config.json"
    if not config.is_file():
        raise ConfigError(
            f"{directory}: no config.json",
            hint="a model directory holds config.json + model.safetensors as transformers' save_pretrained writes",
        )
    if weights is None:
        for candidate in (directory / WEIGHTS, directory / INDEX):
            if candidate.is_file():
                weights = candidate
                break
        else:
            pickled = [p for p in PICKLES if (directory / p).is_file()]
            if pickled:
                raise CheckpointError(
                    f"{directory}: has {pickled[0]} but no model.safetensors; segcli never unpickles implicitly",
                    hint="convert it once to safetensors (README, 'Checkpoints in other formats')",
                )
            raise CheckpointError(f"{directory}: no model.safetensors (or {INDEX})")
    pre = directory / "preprocessor_config.json"
    digest = file_sha256(weights)
    origin = Origin("local", path=str(directory.resolve()), filename=weights.name, sha256=digest)
    info = read_info(config, pre if pre.is_file() else None, str(directory), origin)
    return Resolved(info, weights)


def converted_dir(spec: ModelSpec) -> Path:
    """Where `segcli download` puts a converted mmseg checkpoint."""
    return segcli_cache() / "converted" / spec.name


def conversion_commands(spec: ModelSpec) -> str:
    """The shell commands that fetch and convert a registry entry by hand (one per line)."""
    files = " ".join(spec.source_files)
    convert = f"segcli convert {files} --arch {spec.name} -o {converted_dir(spec)}"
    if spec.download_page:
        return f"download {files} from {spec.download_page}\n{convert}"
    fetches = [f"curl -L -o {Path(url).name} {url}" for url in spec.urls]
    return "\n".join([*fetches, convert])


def _indented(commands: str) -> str:
    return "\n".join(f"  {line}" for line in commands.splitlines())


def _publisher(spec: ModelSpec) -> str:
    return FORMATS[spec.format]


def _converted(spec: ModelSpec) -> Resolved:
    d = converted_dir(spec)
    if (d / "config.json").is_file() and (d / WEIGHTS).is_file():
        r = _local_dir(d)
        return Resolved(replace(r.info, name=spec.name, origin=replace(r.info.origin, kind="converted")), r.weights)
    how = "by hand" if spec.download_page else f"`segcli download {spec.name}` fetches and converts it, or by hand"
    raise NeedsConversionError(
        f"{spec.name} is published by {_publisher(spec)} as .pth checkpoint files and is not converted yet",
        hint=f"{how}:\n{_indented(conversion_commands(spec))}",
    )


def download_and_convert(spec: ModelSpec, *, force: bool = False, quiet: bool = False) -> Resolved:
    """Fetch a registry entry's checkpoint file(s), check the sha256 prefix of a published name, convert."""
    from .convert import convert

    if not force:
        try:
            return _converted(spec)
        except NeedsConversionError:
            pass
    if spec.download_page:
        raise ManualDownloadError(
            f"{spec.name}: {' + '.join(spec.source_files)} cannot be downloaded automatically "
            f"(published on {spec.download_page})",
            hint=f"by hand:\n{_indented(conversion_commands(spec))}",
        )
    folder = segcli_cache() / "downloads" / spec.name
    paths = [folder / Path(url).name for url in spec.urls]
    for url, path in zip(spec.urls, paths, strict=True):
        if force or not path.is_file():
            try:
                fetch_url(url, path, quiet=quiet)
            except DownloadError as e:
                raise DownloadError(
                    e.message, hint=f"where the URL is reachable:\n{_indented(conversion_commands(spec))}"
                ) from None
    digest = file_sha256(paths[0], quiet=quiet)
    if spec.sha256_prefix and not digest.startswith(spec.sha256_prefix):
        raise IntegrityError(
            f"{spec.name}: sha256 of {paths[0]} is {digest}, which does not start with {spec.sha256_prefix}",
            hint=f"nothing was deleted; remove {paths[0]} and download again (segcli download {spec.name} --force)",
        )
    convert(paths, spec, converted_dir(spec))
    return _converted(spec)


def resolve_spec(spec: ModelSpec, *, force: bool = False, quiet: bool = False) -> Resolved:
    """Fetch (or find in the cache) a registry entry's weights and verify their sha256.

    A cached file whose sha256 equals the pinned one is used without asking the Hub anything: pinned
    content cannot change, and a machine with a flaky or no network should not wait on retries for it.
    """
    if spec.needs_conversion:
        return _converted(spec)
    assert spec.repo is not None and spec.filename is not None  # a Hub entry (the registry checks it)
    cached = None if force or not spec.sha256 else try_cached(spec.repo, spec.filename, spec.revision)
    if cached is not None and file_sha256(cached, quiet=quiet) == spec.sha256:
        path = cached
    else:
        path = fetch(spec.repo, spec.filename, spec.revision, force=force, name=spec.name)
    digest = verify(
        path,
        spec.sha256,
        spec.name,
        fix=f"re-download with `segcli download {spec.name} --force`, or fix sha256 in {spec.registry_file}",
        quiet=quiet,
    )
    info = spec.info()
    return Resolved(replace(info, origin=replace(info.origin, sha256=digest)), path)


def _hub_repo(repo: str, revision: str | None, force: bool) -> Resolved:
    config = fetch(repo, "config.json", revision, force=force)
    try:
        weights = fetch(repo, WEIGHTS, revision, force=force)
    except EntryMissingError:
        weights = fetch(repo, INDEX, revision, force=force)
        for shard in shard_names(weights):
            fetch(repo, shard, revision, force=force)
    try:
        pre: Path | None = fetch(repo, "preprocessor_config.json", revision, force=force)
    except EntryMissingError:
        pre = None
    origin = Origin("hub", repo, revision or "main", weights.name, file_sha256(weights))
    name = repo + (f"@{revision}" if revision else "")
    return Resolved(read_info(config, pre, name, origin), weights)


def resolve(source: str, registry: dict[str, ModelSpec], *, force: bool = False) -> Resolved:
    path = Path(source).expanduser()
    if path.is_dir():
        return _local_dir(path)
    if path.is_file() and path.suffix.lower() == ".onnx":
        return Resolved(sidecar.read_info(path, sidecar.read(path)), path)
    if path.is_file():
        if path.suffix != ".safetensors" and not path.name.endswith(".index.json"):
            if pth.is_torchscript(path):  # compiled code: run only as the export segcli's sidecar describes
                if not sidecar.path_for(path).is_file():
                    raise pth.torchscript_error(path)
                return Resolved(sidecar.read_info(path, sidecar.read(path, "torchscript")), path)
            raise ConfigError(
                f"{path}: not a model source", hint="give a directory with config.json + model.safetensors"
            )
        return _local_dir(path.parent, path)
    if source in registry:
        return resolve_spec(registry[source], force=force)
    repo, _, revision = source.partition("@")
    if REPO_ID.fullmatch(repo):
        for spec in registry.values():
            if spec.repo is not None and spec.repo == repo and (not revision or revision == spec.revision):
                return resolve_spec(spec, force=force)
        return _hub_repo(repo, revision or None, force)
    close = difflib.get_close_matches(source, list(registry), n=3)
    raise ModelNotFoundError(
        f"unknown model {source!r}: not a registry name, an existing directory or an owner/name Hub repo id",
        hint=f"did you mean {', '.join(close)}?" if close else "`segcli models` lists the registry",
    )
