"""What comes in and goes out of a run, as files: inputs, decoded images, encoded outputs and their names.

inputs.py     files, folders, globs, stdin lists → Items with collision-free output names
images.py     any image → RGB uint8 [H, W, 3], with one-line errors naming the file
layout.py     the output layout of a run: each input's output files, injective by construction
outputs.py    PNG / JPEG / npy encoders, the resume fingerprint chunk, class statistics, JSON bytes
legend.py     legend panels under overlays, the run's legend.png / classes.json
pngstream.py  a palette PNG written row by row (outputs too large to hold)
raster.py     rasters through GDAL (the [geo] extra): windowed reading, georeferenced GeoTIFF out
"""
