"""Parameter counts and fp32 state-dict bytes of registry networks, remembered per configuration.

`segcli models` lists every entry's size. Counting means building the network on the meta device (~40 ms per
network, ~1 s for the built-in registry); the figures are remembered in `sizes.json` of segcli's cache, keyed
by the configuration's repr and segcli's version, so later listings build nothing. A cache that cannot be
read or written is only a slower listing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Any

from .._version import __version__
from ..fsutil import atomic_write_bytes
from ..model.segmentor import SegmentorConfig
from .hub import segcli_cache

MAX_ENTRIES = 4096  # user registries come and go: the file stays small


def _key(cfg: SegmentorConfig) -> str:
    return hashlib.sha256(f"{__version__}\n{cfg!r}".encode()).hexdigest()[:32]


def _read() -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        doc = json.loads((segcli_cache() / "sizes.json").read_text())
        if isinstance(doc, dict):
            return doc
    return {}


def network_sizes(configs: list[SegmentorConfig]) -> list[tuple[int, int]]:
    """(parameters, bytes) of each network, from the cache where known, else counted (and remembered)."""
    known, sizes, missed = _read(), [], False
    for cfg in configs:
        entry = known.get(_key(cfg))
        if not (isinstance(entry, list) and len(entry) == 2 and all(type(v) is int and v >= 0 for v in entry)):
            from ..model import network_size

            entry, missed = list(network_size(cfg)), True
            known[_key(cfg)] = entry
        sizes.append((entry[0], entry[1]))
    if missed:
        keep = dict(list(known.items())[-MAX_ENTRIES:])
        with contextlib.suppress(OSError):
            atomic_write_bytes(segcli_cache() / "sizes.json", json.dumps(keep).encode())
    return sizes
