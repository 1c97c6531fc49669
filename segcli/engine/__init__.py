"""Inference engine: one path for whole-image, sliding-window, multi-scale and flip prediction.

An image becomes one *view* per (scale, flip). Each view is the image resized as the parameters say and
run whole or in windows; its finished blocks are flipped back, resized to the image's own size and — when
there are several views — turned into probabilities and averaged (mmseg `SegTTAModel.merge_preds`).
Windows of all views run in one schedule, batched (`tile_batch`) where their shapes agree, ordered so that
every view advances down the image together: what is held at full class depth is a band of rows, never
the whole image. Results go to *sinks* (labels, float16 probabilities, float32 logits) as rows finish.

    model.py     SegModel: the interface the engine runs (PyTorch Segmentor, ONNX runner, backends)
    presets.py   the named test protocols (Params) and their overrides
    heads.py     how a model's channels split into heads; label maps from them
    predict.py   views, windows and the schedule (plan, predict_many, predict)
    forward.py   one forward pass over a batch of windows (normalise, pad, mirror, softmax)
    slide.py     mmseg's window grid and bounded-memory accumulation of window logits
    merge.py     flip back, resize to the image, average views, sinks → Prediction
    resample.py  image and logit resizing (mmcv / Pillow geometry, streamed by rows)
    lazy.py      LazyImage: an image read (and resized) by bands of rows
    stream.py    predict_rows: one such image, finished label rows handed on as they come
"""

from .merge import Prediction
from .model import SegModel
from .predict import View, plan, predict, predict_many, view_size

__all__ = ["Prediction", "SegModel", "View", "plan", "predict", "predict_many", "view_size"]
