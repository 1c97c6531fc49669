"""`segcli predict`'s own options (the shared ones are in `common.py`, the raster and Ray ones beside them)."""

from __future__ import annotations

from typing import Annotated

import typer

IN, OUT, RUN = "Inputs", "Outputs", "Execution"

InputsArg = Annotated[
    list[str],
    typer.Argument(
        metavar="INPUT",
        help="Image or video files, folders (searched recursively), glob patterns ('scans/*/*.tif'), URLs "
        "(s3://bucket/prefix/, s3://bucket/**/*.jpg, https://host/img.jpg; the [remote] extra), or - to read "
        "paths or URLs from stdin, one per line.",
    ),
]
OutOpt = Annotated[
    str,
    typer.Option(
        "--out",
        "-o",
        metavar="DIR",
        help="Output folder (created if missing), or an s3:// / gs:// prefix to upload to.",
        rich_help_panel=OUT,
    ),
]
NullOpt = Annotated[
    bool, typer.Option("--null", "-0", help="Paths on stdin are NUL-separated (find -print0).", rich_help_panel=IN)
]
ExtOpt = Annotated[
    str | None,
    typer.Option(
        metavar="EXT,...",
        help="Extensions searched in folders [jpg,jpeg,png,bmp,tif,tiff,webp and the videos'"
        " mp4,m4v,mov,avi,mkv,webm,mpg,mpeg,wmv; ts when named or with --ext].",
        rich_help_panel=IN,
    ),
]
RecursiveOpt = Annotated[
    bool, typer.Option("--recursive/--no-recursive", help="Search subfolders.", rich_help_panel=IN)
]
ShardOpt = Annotated[
    str | None,
    typer.Option(
        metavar="I/N", help="Process shard I of N (I from 0), e.g. $SLURM_ARRAY_TASK_ID/8.", rich_help_panel=IN
    ),
]
MaxPixelsOpt = Annotated[
    int,
    typer.Option(
        metavar="N", help="Refuse larger images (default: Pillow's decompression-bomb limit).", rich_help_panel=IN
    ),
]
SaveOpt = Annotated[
    str | None,
    typer.Option(
        metavar="KIND,...",
        help="Besides <stem>.png: any of label, overlay, probs, json, part, material, geotiff, coco, confidence, entropy, labelstudio, vector, video (comma list), or "
        "none [json; json,part,material for a parsing model]. probs holds float16 [classes, H, W] per image: images "
        "needing more than 4 GiB fail.",
        rich_help_panel=OUT,
    ),
]
LowConfidenceOpt = Annotated[
    float,
    typer.Option(
        metavar="P",
        help="--save confidence / entropy: the JSON's uncertain_fraction counts the pixels whose largest "
        "probability is below P.",
        rich_help_panel=OUT,
    ),
]
VectorFormatOpt = Annotated[
    str,
    typer.Option(
        metavar="geojson|gpkg",
        help="--save vector: GeoJSON (WGS84 lon/lat; a photo's in pixels) or GeoPackage (the raster's own CRS).",
        rich_help_panel=OUT,
    ),
]
MinAreaOpt = Annotated[
    str,
    typer.Option(
        metavar="N|Nm2", help="--save vector: leave out regions smaller than N pixels (or N m²).", rich_help_panel=OUT
    ),
]
SimplifyOpt = Annotated[
    float,
    typer.Option(
        metavar="T",
        help="--save vector: simplify polygons within T pixels (0: exact pixel edges).",
        rich_help_panel=OUT,
    ),
]
LsFromOpt = Annotated[
    str, typer.Option(metavar="NAME", help="--save labelstudio: the BrushLabels tag's name.", rich_help_panel=OUT)
]
LsToOpt = Annotated[
    str, typer.Option(metavar="NAME", help="--save labelstudio: the Image tag's name.", rich_help_panel=OUT)
]
LsPrefixOpt = Annotated[
    str,
    typer.Option(
        metavar="PREFIX",
        help="--save labelstudio: what each task's image reference starts with, before the input's relative path "
        "(e.g. /data/local-files/?d=photos/ or https://bucket.example/photos/) [nothing].",
        rich_help_panel=OUT,
    ),
]
CocoFileOpt = Annotated[
    bool,
    typer.Option(
        "--coco-file",
        help="Also OUT/coco.json (a COCO dataset of every image, masks as RLE) and OUT/coco-results.json (its "
        "annotations, for COCO.loadRes); implies --save coco.",
        rich_help_panel=OUT,
    ),
]
AlphaOpt = Annotated[
    float, typer.Option(metavar="A", help="Overlay opacity of the class colours (0..1).", rich_help_panel=OUT)
]
TopkOpt = Annotated[
    int | None,
    typer.Option(
        metavar="K", help="probs: keep the K most probable classes (.npz) instead of all (.npy).", rich_help_panel=OUT
    ),
]
ReportInputsOpt = Annotated[
    str | None,
    typer.Option(
        metavar="HOW",
        help="How the report links to the input photos: absolute (file:// links; OUT can move on this machine), "
        "relative (OUT served or moved together with the inputs) or copy (copies in OUT; OUT can go anywhere) "
        "[absolute].",
        rich_help_panel=OUT,
    ),
]
LegendOpt = Annotated[
    bool,
    typer.Option(
        "--legend/--no-legend", help="Overlays list the classes present under the image.", rich_help_panel=OUT
    ),
]
ReportOpt = Annotated[
    bool,
    typer.Option(
        "--report",
        help="Write OUT/index.html: a gallery (image, overlay, mask, top classes), the class distribution, the "
        "parameters and the failures; static, offline (needs jinja2 and matplotlib: the [report] extra).",
        rich_help_panel=OUT,
    ),
]
JsonlOpt = Annotated[
    bool, typer.Option("--jsonl", help="One JSON record per image on stdout (and nothing else).", rich_help_panel=OUT)
]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Redo images whose outputs already exist.", rich_help_panel=OUT)
]
BatchSizeOpt = Annotated[int, typer.Option(metavar="N", help="Same-size images run together.", rich_help_panel=RUN)]
ThreadsOpt = Annotated[
    int | None, typer.Option(metavar="N", help="CPU threads for inference (default: torch's).", rich_help_panel=RUN)
]
