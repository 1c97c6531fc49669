"""`segcli download`: fetch weights into the Hugging Face cache ahead of use (and verify them)."""

from __future__ import annotations

from typing import Annotated

import typer

from ..errors import EXIT_USAGE, NotCachedError, SegcliError, UsageError
from .common import STATE, DebugOpt, RegistryOpt, eprint, handle_errors, report


def _for_download(e: SegcliError) -> SegcliError:
    """`segcli download` itself failed: its hint cannot be "run segcli download"."""
    if isinstance(e, NotCachedError):
        return NotCachedError(
            e.message,
            hint="run this command again where the Hub is reachable\n"
            "then copy that Hugging Face cache (~/.cache/huggingface, or HF_HUB_CACHE) here and use it with "
            "HF_HUB_OFFLINE=1",
        )
    return e


@handle_errors
def download(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Registry names (see `segcli models`) or Hub repo ids owner/name[@revision]."),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every registry entry.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Download again even when cached.")] = False,
    debug: DebugOpt = False,
    registry: RegistryOpt = None,
) -> None:
    """Download model weights into the standard Hugging Face cache (HF_HOME / HF_HUB_CACHE), verifying the
    registry's sha256; mmsegmentation .pth entries are fetched, checked and converted to safetensors in
    segcli's cache. Prints NAME, path and sha256 per model on stdout; progress goes to stderr."""
    from ..loading.registry import load_registry
    from ..loading.sources import REPO_ID, download_and_convert, resolve, resolve_spec

    specs = load_registry(STATE.registry)
    targets = list(specs) if all_ else list(dict.fromkeys(names or []))
    if not targets:
        raise UsageError("name at least one model, or use --all", hint="`segcli models` lists the registry")
    unknown = [n for n in targets if n not in specs and not REPO_ID.fullmatch(n.partition("@")[0])]
    if unknown:
        raise UsageError(f"unknown model(s): {', '.join(unknown)}", hint="`segcli models` lists the registry")
    failed = 0
    for name in targets:
        spec = specs.get(name)
        try:
            if spec is not None and spec.needs_conversion:
                resolved = download_and_convert(spec, force=force)
            elif spec is not None:
                resolved = resolve_spec(spec, force=force)
            else:
                resolved = resolve(name, specs, force=force)
        except SegcliError as e:
            failed += 1
            report(_for_download(e))
            continue
        o = resolved.info.origin
        print(f"{name}\t{resolved.weights}\t{o.sha256 or '-'}", flush=True)
        if o.kind == "registry" and spec is not None and not spec.sha256:
            eprint(f"segcli: note: {name} has no pinned sha256 in {specs[name].registry_file}; got {o.sha256}")
    if failed:
        raise typer.Exit(EXIT_USAGE)
