"""`segcli models`: the registry as a table (or JSON)."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from .common import STATE, DebugOpt, JsonOpt, RegistryOpt, handle_errors


def _rows() -> list[dict[str, Any]]:
    from ..loading.hub import try_cached
    from ..loading.registry import load_registry
    from ..loading.sizes import network_sizes
    from ..loading.sources import converted_dir

    rows = []
    specs = list(load_registry(STATE.registry).values())
    for spec, (params, nbytes) in zip(specs, network_sizes([s.network for s in specs]), strict=True):
        if spec.needs_conversion:
            d = converted_dir(spec)
            cached = d / "model.safetensors" if (d / "model.safetensors").is_file() else None
            state = "ready" if cached else ("download by hand" if spec.download_page else "needs conversion")
        else:
            assert spec.repo is not None and spec.filename is not None  # a Hub entry
            cached = try_cached(spec.repo, spec.filename, spec.revision)
            state = "cached" if cached else "not cached"
        rows.append(
            {
                "name": spec.name,
                "description": spec.description,
                "backbone": spec.backbone_name,
                "params": params,
                "download_bytes": nbytes,
                "miou": spec.miou,
                "miou_ms": spec.miou_ms,
                "crop_size": spec.crop_size,
                "dataset": spec.dataset,
                "preset": spec.preset,
                "protocol": spec.protocol,
                "repo": spec.repo,
                "revision": spec.revision,
                "filename": spec.filename,
                "sha256": spec.sha256,
                "license": spec.license,
                "url": spec.url,
                "urls": list(spec.urls),
                "format": spec.format if spec.needs_conversion else None,
                "download_page": spec.download_page,
                "files": list(spec.files),
                "cached": cached is not None,
                "cached_path": str(cached) if cached else None,
                "state": state,
            }
        )
    return rows


def _backends(json_out: bool) -> None:
    """The choices `--backend auto` measured and cached on this machine."""
    from ..backends.calibrate import cache_file, entries

    rows = entries()
    if json_out:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print(f"no backend measured on this machine yet ({cache_file()})")
        return
    for r in rows:
        figures = ", ".join(f"{n} {v:.3g} s" for n, v in sorted(r["seconds"].items(), key=lambda kv: kv[1]))
        about = " ".join(str(r[f]) for f in ("model", "view", "device", "dtype") if r[f]) or r["key"]
        when = f", measured {r['measured_at']}" if r["measured_at"] else ""
        print(f"{about}: {r['choice']} ({figures}{when})")
    print(f"(cached in {cache_file()}; predict --backend-measure again measures anew)")


BackendsOpt = Annotated[bool, typer.Option("--backends", help="List the backends --backend auto chose here instead.")]


@handle_errors
def models(
    json_out: JsonOpt = False, backends: BackendsOpt = False, debug: DebugOpt = False, registry: RegistryOpt = None
) -> None:
    """List the registry: backbone, parameters, download size, published mIoU and state (cached / not
    cached for Hub weights; ready / needs conversion / download by hand for .pth checkpoints)."""
    if backends:
        _backends(json_out)
        return
    rows = _rows()
    if json_out:
        print(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    caption = (
        "Registry names run with the protocol behind their published mIoU (preset mmseg, csail, semseg or upp); the "
        "same weights named as a Hub repo (openmmlab/...) or a local directory default to preset hf."
    )
    table = Table(title=None, header_style="bold", caption=caption)
    for col, just in [
        ("name", "left"),
        ("backbone", "left"),
        ("params", "right"),
        ("download", "right"),
        ("mIoU ss/ms", "right"),
        ("crop", "right"),
        ("dataset", "left"),
        ("state", "left"),
    ]:
        table.add_column(col, justify="right" if just == "right" else "left", no_wrap=True)
    for r in rows:
        miou = f"{r['miou']:.2f} / {r['miou_ms']:.2f}" if r["miou"] is not None and r["miou_ms"] is not None else "-"
        table.add_row(
            r["name"],
            r["backbone"],
            f"{r['params'] / 1e6:.1f}M",
            f"{r['download_bytes'] / 1e6:.0f} MB",
            miou,
            str(r["crop_size"]),
            r["dataset"],
            r["state"],
        )
    Console(width=None if sys.stdout.isatty() else 200).print(table)
