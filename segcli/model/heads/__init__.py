"""Decode heads: `uper.py` (PPM + FPN), `psp.py`, `fcn.py` (auxiliary), `ppm.py` (pooling), `upp.py` (parser)."""
