"""Fine-tuning (`segcli train`): `segcli.train.fit(data, model, out, **options)` → `Summary` (see `fit.py`)."""

from .fit import Events, Options, Summary, fit

__all__ = ["Events", "Options", "Summary", "fit"]
