"""`segcli predict` options for rasters read through GDAL (the `[geo]` extra)."""

from __future__ import annotations

from typing import Annotated

import typer

GEO = "Rasters (GeoTIFF, COG, JP2: the [geo] extra)"

BandsOpt = Annotated[
    str | None,
    typer.Option(
        metavar="R,G,B",
        help="Raster bands shown to the model as red, green, blue (1-based; one band is replicated) "
        "[the RGB colour interpretation, else 1,2,3].",
        rich_help_panel=GEO,
    ),
]
ScaleRangeOpt = Annotated[
    str | None,
    typer.Option(metavar="MIN:MAX", help="Scale raster values MIN..MAX to 0..255 (e.g. 0:10000).", rich_help_panel=GEO),
]
StretchOpt = Annotated[
    str | None,
    typer.Option(
        metavar="P1,P2",
        help="Scale each band's P1..P2 percentiles to 0..255 [2,98 for data that is not 8-bit].",
        rich_help_panel=GEO,
    ),
]
TrustVrtOpt = Annotated[
    bool,
    typer.Option(
        "--trust-vrt",
        help="Let VRT inputs read sources outside their own folder and over the network (/vsicurl/, /vsis3/ ...); "
        "by default they are refused, and GDAL opens no URL.",
        rich_help_panel=GEO,
    ),
]
OverviewsOpt = Annotated[
    bool, typer.Option("--overviews", help="--save geotiff: add internal overviews.", rich_help_panel=GEO)
]
