"""What GDAL may open for an input raster: the input, and the files beside it — never the network.

A raster in a collection is untrusted input, and GDAL opens more than the file it is given: a VRT (an XML
file, whatever its extension) names source files that GDAL opens in turn — `/vsicurl/http://…` (a request
to any host), `/vsis3/…`, `/etc/passwd` through a raw band, a FIFO that never answers; other XML "rasters"
(WMS, WCS, GTI tile indexes) are network clients. So, unless the user trusts the collection (`--trust-vrt`):

* inputs open with GDAL's file-format drivers only (`READ_DRIVERS`: no WMS/WCS/HTTP/GTI);
* a VRT is parsed first (bounded: `MAX_VRT_BYTES`, no DTD or entities, `MAX_DEPTH` nested VRTs): every
  `SourceFilename` / `SourceDataset` must be a plain path (no `/vsi…`, no `scheme:` or `DRIVER:` prefix)
  to a regular file inside the VRT's own folder (symlinks resolved, then checked again); a source that is
  XML must be a VRT itself (checked the same way); Python pixel functions are refused;
* GDAL runs with its network reads switched off (`FENCE_CONFIG`, process-wide defaults a user's own
  environment overrides) as a second line, should a source slip past the parse.

With `--trust-vrt` the sources may be anywhere (network too), and only local sources that are not regular
files (FIFOs, devices: they would block a read forever) are refused.
"""

from __future__ import annotations

import functools
import os
import re
import stat
from pathlib import Path
from xml.etree import ElementTree

from ..errors import ImageError
from ..fsutil import read_regular, require_regular

#: GDAL drivers an input may open with (file formats; none of them reaches the network).
READ_DRIVERS = ("GTiff", "VRT", "HFA", "ENVI", "JP2OpenJPEG", "JP2KAK", "JP2ECW", "JP2MrSID", "PNG", "JPEG")
MAX_VRT_BYTES = 16 << 20  # a VRT of a mosaic of ~50000 tiles
MAX_DEPTH = 8  # VRTs within VRTs
MAX_SOURCES = 1_000_000

#: GDAL settings while segcli reads rasters (set once, before GDAL's first use; the user's environment wins).
FENCE_CONFIG = {
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".segcli-no-network",  # /vsicurl/, /vsis3/, ... open nothing
    "GDAL_HTTP_TIMEOUT": "10",
    "GDAL_HTTP_MAX_RETRY": "0",
    "GDAL_VRT_ENABLE_PYTHON": "NO",
}
TRUSTED_CONFIG = {"GDAL_HTTP_TIMEOUT": "30", "GDAL_VRT_ENABLE_PYTHON": "NO"}

_SOURCE_TAGS = ("sourcefilename", "sourcedataset")  # GDAL matches names without regard to case
_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9_+.-]*:")  # http:, vrt://, NETCDF:, GTI:, ... (not a plain path)
HINT = "pass --trust-vrt if this collection is yours and its VRTs may read other folders or the network"


def check(path: Path, trusted: bool) -> None:
    """Refuse `path` (ImageError naming it) when GDAL would open more than its own folder's files."""
    _check(Path(path), Path(os.path.realpath(path)).parent, trusted, 0, [0], str(path))


@functools.cache
def read_drivers() -> tuple[str, ...]:
    """`READ_DRIVERS` that this GDAL has."""
    from .raster import rasterio

    with rasterio().Env() as env:
        have = env.drivers()
    return tuple(d for d in READ_DRIVERS if d in have)


def _head(path: Path, label: str) -> bytes:
    try:
        require_regular(path)  # a FIFO would block the open
        with open(path, "rb") as f:
            return f.read(256).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError as e:
        raise ImageError(f"{label}: cannot read {path.name} ({e.strerror or e})") from None


def _check(path: Path, root: Path, trusted: bool, depth: int, count: list[int], label: str) -> None:
    """`label`: the input, and the VRT within it that names `path`, for the messages."""
    if not _head(path, label).startswith(b"<"):
        return  # a binary raster: GDAL reads it (and its sidecars beside it) only
    if depth >= MAX_DEPTH:
        raise ImageError(f"{label}: VRTs nested more than {MAX_DEPTH} deep", hint="flatten it with gdal_translate")
    for name, relative in _sources(path, label):
        count[0] += 1
        if count[0] > MAX_SOURCES:
            raise ImageError(f"{label}: more than {MAX_SOURCES} VRT sources", hint="split the mosaic")
        for source in _resolve(path, name, relative, root, trusted, label):
            _check(source, root, trusted, depth + 1, count, f"{label} (through {source.name})")


def _sources(path: Path, label: str) -> list[tuple[str, bool]]:
    """(source name, relative to the VRT) of every source element; refuses what cannot be checked."""
    try:
        text = read_regular(path, MAX_VRT_BYTES)
    except OSError as e:
        raise ImageError(f"{label}: cannot read {path.name} as a VRT ({e.strerror or e})") from None
    if b"<!DOCTYPE" in text or b"<!ENTITY" in text:
        raise ImageError(f"{label}: a VRT with a DTD or entities", hint="remove the <!DOCTYPE> / <!ENTITY> part")
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as e:
        raise ImageError(f"{label}: not a well-formed VRT ({e})") from None
    if not isinstance(root.tag, str) or root.tag.lower() != "vrtdataset":
        raise ImageError(
            f"{label}: an XML file GDAL would read as a network or index dataset (<{root.tag}>), not a raster file",
            hint="convert it to a GeoTIFF (gdal_translate) and segment that",
        )
    out: list[tuple[str, bool]] = []
    for el in root.iter():
        tag = el.tag.lower() if isinstance(el.tag, str) else ""
        if tag == "pixelfunctionlanguage" and (el.text or "").strip().lower() == "python":
            raise ImageError(f"{label}: a VRT with a Python pixel function (code segcli does not run)")
        if tag in _SOURCE_TAGS:
            attrs = {k.lower(): v.strip() for k, v in el.attrib.items()}
            out.append(((el.text or "").strip(), attrs.get("relativetovrt", "0") == "1"))
    return out


def _resolve(vrt: Path, name: str, relative: bool, root: Path, trusted: bool, label: str) -> list[Path]:
    """The local files a source may be, to check further (none: a trusted remote source); ImageError if refused."""
    remote = name.startswith("/vsi") or bool(_PREFIX.match(name)) or "://" in name
    if remote:
        if trusted:
            return []
        raise ImageError(f"{label}: VRT source {name!r} is not a file beside it (network or virtual path)", hint=HINT)
    if not name:
        raise ImageError(f"{label}: a VRT source with no file name")
    source = Path(name)
    # a relative name: beside the VRT, or (relativeToVRT="0") from the working folder; both are checked
    where = [source] if source.is_absolute() else [vrt.parent / source, Path.cwd() / source]
    if relative:
        where = where[:1]
    found: list[Path] = []
    for candidate in where:
        real = Path(os.path.realpath(candidate))
        if not trusted and not real.is_relative_to(root):
            raise ImageError(f"{label}: VRT source {name!r} is outside the input's folder ({root})", hint=HINT)
        try:
            mode = os.stat(real).st_mode
        except FileNotFoundError:
            continue  # GDAL finds nothing there either
        except OSError as e:
            raise ImageError(f"{label}: VRT source {name!r} cannot be read ({e.strerror or e})") from None
        if not stat.S_ISREG(mode):
            raise ImageError(f"{label}: VRT source {name!r} is not a regular file (a FIFO, device, socket or folder)")
        found.append(real)
    if not found:
        raise ImageError(f"{label}: VRT source {name!r} does not exist", hint="keep a VRT's sources beside it")
    return sorted(set(found))
