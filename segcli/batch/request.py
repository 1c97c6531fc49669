"""What a prediction over a collection is asked to do, checked before anything is loaded.

`Inference` (how the model runs: preset and overrides, device, dtype, backend; `segcli predict` and `segcli
evaluate --model` share it), `Request` (everything `segcli.batch.predict` takes) and `Events` (what a run
tells as it goes; the CLI prints it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..fsutil import overlap, probe_writable, read_json_object
from ..io.images import DEFAULT_MAX_PIXELS
from ..io.raster import RasterOptions
from ..io.remote import PROTOCOLS, RemoteOptions, redact, scheme

if TYPE_CHECKING:
    from ..io.inputs import Discovery
    from .records import ImageRecord

DEFAULT_MODEL = "upernet-convnext-tiny"
BACKENDS_KEPT = ("torch", "compile", "onnxruntime", "openvino")  # what a resumed run's `auto` may keep


@dataclass(frozen=True)
class Inference:
    """How the model runs: the preset (None: the model's own) and its overrides (None: the preset's value),
    the device, the dtype and the backend."""

    preset: str | None = None
    resize: str | None = None
    mode: str | None = None
    crop: str | None = None
    stride: str | None = None
    blend: str | None = None
    scales: str | None = None
    flip: bool | None = None
    tile_batch: int | None = None
    device: str = "auto"
    dtype: str = "auto"
    backend: str = "auto"
    backend_measure: str = "auto"  # auto | again | never (backends.MEASURE)
    class_map: str | None = None  # --class-map FILE: the model's classes merged (loading.class_map)

    def overrides(self) -> dict[str, Any]:
        """The preset overrides, as `Segmenter.params` takes them."""
        return {
            "resize": self.resize,
            "mode": self.mode,
            "crop": self.crop,
            "stride": self.stride,
            "blend": self.blend,
            "scales": self.scales,
            "flip": self.flip,
            "tile_batch": self.tile_batch,
        }

    def check(self) -> None:
        """Typos are usage errors before any download or model loading."""
        from ..backends import check as check_backend
        from ..backends import check_measure
        from ..engine.presets import check

        check(self.preset, **self.overrides())
        check_backend(self.backend)
        check_measure(self.backend_measure)


class Events:
    """What a run tells as it goes. The defaults say nothing; the CLI prints each, as it comes."""

    def say(self, level: str, message: str) -> None:
        """One line: `level` "error" or "warning" (always worth showing) or "info" (progress notes)."""

    def started(self, total: int) -> None:
        """The model is loaded and the run begins: `total` records will follow."""

    def record(self, record: ImageRecord) -> None:
        """One input's outcome (done / skipped / failed), in input order."""

    def windows(self, done: int, total: int) -> None:
        """Progress within one large image (a raster read by windows)."""

    def should_stop(self) -> bool:
        """Polled between batches: True finishes the images in flight, writes the summary and returns."""
        return False


@dataclass(frozen=True)
class Request:
    """Everything a prediction over a collection is asked to do (`segcli predict`'s options, as data)."""

    inputs: tuple[str, ...]  # files, folders, globs, "-" (paths on stdin)
    out: str | Path  # as given ("" is refused, not read as the current folder)
    model: str = DEFAULT_MODEL
    inference: Inference = field(default_factory=Inference)
    save: str | None = None  # comma list of output kinds (None: json, and a parser's maps; "none": nothing more)
    alpha: float = 0.5
    topk: int | None = None
    legend: bool = True
    report: bool = False
    report_inputs: str | None = None  # the report's links to the inputs: gallery.LINKS (None: absolute)
    overwrite: bool = False
    batch_size: int = 1
    max_pixels: int = DEFAULT_MAX_PIXELS
    threads: int | None = None
    ext: str | None = None
    recursive: bool = True
    null: bool = False
    shard: str | None = None
    bands: str | None = None
    scale_range: str | None = None
    stretch: str | None = None
    overviews: bool = False
    low_confidence: float = 0.5  # --save confidence / entropy: the JSON's uncertain_fraction threshold
    vector_format: str = "geojson"  # --save vector: geojson | gpkg
    min_area: str = "0"  # --save vector: pixels, or "Nm2"
    simplify: float = 0.0  # --save vector: tolerance in pixels
    ls_from_name: str = "tag"  # --save labelstudio: the BrushLabels tag, the Image tag, what image URLs start with
    ls_to_name: str = "image"
    ls_image_prefix: str = ""
    every: int | None = None  # videos: every N-th frame (io.video.Selection) …
    fps: float | None = None  # … or about F frames per second
    start: str | float | None = None  # … from this time (seconds or [HH:]MM:SS) …
    end: str | float | None = None  # … to this one (exclusive)
    coco_file: bool = False  # OUT/coco.json + coco-results.json from the images' COCO files (io.coco)
    trust_vrt: bool = False  # VRT sources may leave their folder and reach the network
    timeout: float = 30.0  # URLs: seconds without an answer before a request fails (io.remote)
    retries: int = 2  # … and how many more times a timeout, dropped connection or 5xx is tried
    ray: str | None = None  # a Ray address ("local": start one)
    workers: int | None = None
    gpus_per_worker: float | None = None
    registry: str | None = None
    ray_logs: bool = False  # Ray's own log lines shown (the CLI's --debug)
    found: Discovery | None = None  # the inputs, discovered already (evaluate: the images with ground truth)


def save_kinds(text: str | None) -> frozenset[str]:
    """`--save` as a set of output kinds (None: the default, json)."""
    from ..io.outputs import SAVE_KINDS

    kinds = {k.strip() for k in (text or "json").split(",") if k.strip() and k.strip() != "none"}
    unknown = sorted(kinds - set(SAVE_KINDS))
    if unknown:
        raise UsageError(
            f"unknown --save kind(s) {', '.join(unknown)}", hint=f"choose from {', '.join(SAVE_KINDS)}, or none"
        )
    return frozenset(kinds)


def model_kinds(kinds: frozenset[str], maps: tuple[str, ...], default: bool) -> frozenset[str]:
    """--save for this model: a parsing model's maps by default; an overlay per map."""
    missing = sorted(kinds & {"part", "material"} - set(maps))
    if missing:
        raise UsageError(
            f"--save {','.join(missing)}: this model has no {' or '.join(missing)} head",
            hint="part and material maps come from a unified perceptual parser (-m upp-resnet50-upernet)",
        )
    kinds = kinds | set(maps) if default else kinds
    overlays = {f"{m}_overlay" for m in maps} if "overlay" in kinds else set()
    return frozenset(kinds | overlays)


def check_options(req: Request, kinds: frozenset[str]) -> Path:
    """The output folder, once the options that need no model are checked."""
    if not 0.0 <= req.alpha <= 1.0:
        raise UsageError(f"--alpha {req.alpha} is outside 0..1")
    if "vector" in kinds:
        from ..io.vector import modules, parse_min_area

        modules()  # the [geo] extra, before any work
        parse_min_area(req.min_area)
        if req.vector_format not in ("geojson", "gpkg"):
            raise UsageError(f"--vector-format {req.vector_format!r}: give geojson or gpkg")
        if not 0 <= req.simplify < float("inf"):
            raise UsageError(f"--simplify {req.simplify}: give a tolerance in pixels, 0 or more")
    if not 0.0 < req.low_confidence <= 1.0:
        raise UsageError(f"--low-confidence {req.low_confidence} is outside 0..1", hint="e.g. --low-confidence 0.5")
    if req.topk is not None and not 1 <= req.topk <= 65536:
        raise UsageError(f"--topk {req.topk}: must be 1..65536")
    if req.topk is not None and "probs" not in kinds:
        raise UsageError("--topk applies to the probabilities", hint="add probs to --save, e.g. --save json,probs")
    if req.report_inputs is not None:
        from ..report.gallery import LINKS

        if req.report_inputs not in LINKS:
            raise UsageError(f"--report-inputs {req.report_inputs!r}: give one of {', '.join(LINKS)}")
        if not req.report:
            raise UsageError("--report-inputs applies to the report", hint="add --report")
    if not 1 <= req.batch_size <= 1024:
        raise UsageError("--batch-size must be 1..1024")
    if not str(req.out).strip():
        raise UsageError("--out is empty", hint="name the output folder, e.g. -o masks")
    if not 0 < req.timeout <= 3600:
        raise UsageError(f"--timeout {req.timeout:g}: give seconds, more than 0 and at most 3600")
    if not 0 <= req.retries <= 10:
        raise UsageError(f"--retries {req.retries}: give 0..10")
    if scheme(str(req.out)) is not None:
        return _staging(req, kinds)
    path = Path(req.out).expanduser()
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {path} exists and is not a directory")
    return path


def raster_options(req: Request, kinds: frozenset[str]) -> RasterOptions:
    """The checked raster options; the [geo] extra required when any is used (exit 2 before any work)."""
    from ..io.raster import rasterio

    options = RasterOptions.parse(req.bands, req.scale_range, req.stretch, req.trust_vrt)
    if req.overviews and "geotiff" not in kinds:
        raise UsageError("--overviews applies to GeoTIFF outputs", hint="add geotiff to --save")
    if options != RasterOptions(trust_vrt=req.trust_vrt) or "geotiff" in kinds:
        rasterio()
    return options


def check_report(shard: tuple[int, int] | None) -> None:
    from ..report.html import require_report

    if shard:
        raise UsageError(
            "--report describes a whole run, not one --shard",
            hint="after the shards, run the same command without --shard and with --report (done images are skipped)",
        )
    require_report()


def discovery_notes(found: Discovery, say: Callable[[str, str], None]) -> None:
    """Warnings about what discovery skipped; a usage error when it found nothing at all."""
    for note in dict.fromkeys(found.skipped):
        say("warning", note)
    if found.own_outputs or found.own_folders:
        folders = f" and {len(found.own_folders)} output folder(s) of earlier runs" if found.own_folders else ""
        say("info", f"note: left out {found.own_outputs} PNG(s) segcli wrote{folders} (e.g. earlier masks)")
    if not found.items and not found.errors:
        raise UsageError(
            "no images found in the inputs",
            hint="see --ext; folders are searched for jpg jpeg png bmp tif tiff webp and videos (mp4 mov avi mkv webm …)",
        )


def _staging(req: Request, kinds: frozenset[str]) -> Path:
    """The staging folder of `-o URL` (batch.outbox), once what it cannot do yet is refused."""
    from .outbox import Outbox

    box = Outbox.of(str(req.out), remote_options(req))
    for flag, used in (("--report", req.report), ("--save video", "video" in kinds), ("--coco-file", req.coco_file),
                       ("--save labelstudio", "labelstudio" in kinds)):  # fmt: skip
        if used:
            raise UsageError(
                f"{flag} with --out {redact(str(req.out))}: not with outputs to a URL yet",
                hint="write to a local folder, then copy it (aws s3 sync, gcloud storage rsync)",
            )
    box.root.mkdir(parents=True, exist_ok=True)
    return box.root


def publish_url(req: Request) -> str | None:
    """`-o URL`'s prefix (None for a local --out)."""
    return str(req.out).rstrip("/") if scheme(str(req.out)) is not None else None


def check_inputs_apart(publish: str, found: Discovery) -> None:
    """An output prefix must not be, hold or lie inside an input prefix (a listing would take the outputs
    as images, or the outputs would land among the inputs)."""

    def same(url: str) -> str:  # s3a:// is s3://, gcs:// is gs://, the scheme in any case
        s, _, rest = url.partition("://")
        return f"{PROTOCOLS.get(s.lower(), s.lower())}://{rest}"

    out = same(publish)
    for prefix in sorted(found.prefixes):
        p = same(prefix)
        if out == p or out.startswith(p + "/") or p.startswith(out + "/"):
            raise UsageError(
                f"--out {redact(publish)} overlaps the input prefix {redact(prefix)}: outputs would mix with inputs",
                hint="choose a prefix beside the inputs, e.g. s3://bucket/masks/",
            )


def remote_options(req: Request) -> RemoteOptions:
    """How URLs are read: `--timeout`, `--retries`, and a byte limit that follows --max-pixels (no image
    file is larger than 8 bytes a pixel; 64 MiB at least)."""
    return RemoteOptions(req.timeout, req.retries, max(64 << 20, 8 * req.max_pixels))


def check_out(out: Path, found: Discovery) -> None:
    """--out must not be an input folder or contain one (its outputs would land among the inputs and be read
    back by the next run; a folder *inside* an input folder is fine: it is not searched) and must be
    writable — found out before any model is loaded."""
    for root in sorted(found.roots):
        how = overlap(out, root)
        if how in ("is", "contains"):
            where = "is the input folder" if how == "is" else "contains the input folder"
            raise UsageError(
                f"--out {out} {where} {root}: outputs would be mixed with the images",
                hint="choose another folder, e.g. -o masks (a folder inside an input folder is fine)",
            )
    try:
        probe_writable(out)
    except OSError as e:
        raise UsageError(f"--out {out}: cannot write there ({e.strerror or e})") from None


def earlier_backend(out: Path, overwrite: bool) -> str | None:
    """The backend the earlier run into `out` recorded in its summary.json (None without one, or with
    --overwrite): `auto` keeps it, so a resumed run's outputs keep one fingerprint."""
    if overwrite:
        return None
    try:
        name = read_json_object(out / "summary.json", 64 << 20)["inference"]["backend"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return name if name in BACKENDS_KEPT else None
