"""`segcli predict` options for rasters read through GDAL (the `[geo]` extra)."""

from __future__ import annotations

from typing import Annotated

import typer

from ..errors import UsageError
from ..io.raster import RasterOptions

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
OverviewsOpt = Annotated[
    bool, typer.Option("--overviews", help="--save geotiff: add internal overviews.", rich_help_panel=GEO)
]


def raster_options(
    bands: str | None, scale_range: str | None, stretch: str | None, overviews: bool, kinds: frozenset[str]
) -> RasterOptions:
    """The checked raster options; the [geo] extra required when any is used (exit 2 before any work)."""
    from ..io.raster import rasterio

    options = RasterOptions.parse(bands, scale_range, stretch)
    if overviews and "geotiff" not in kinds:
        raise UsageError("--overviews applies to GeoTIFF outputs", hint="add geotiff to --save")
    if options != RasterOptions() or "geotiff" in kinds:
        rasterio()
    return options
