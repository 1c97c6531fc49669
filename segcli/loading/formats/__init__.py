"""On-disk model formats, one module each, reading and writing side by side.

hf.py       transformers' config.json + preprocessor_config.json (UperNetForSemanticSegmentation), read
native.py   segcli's own model directory ("format": "segcli/1" config.json + model.safetensors), read and write
sidecar.py  the JSON beside an exported ONNX / TorchScript file (segcli-export/1), read and write
arch.py     the backbone / head tables of weights.toml and segcli/1 configs ↔ network configs
mmseg.py    mmsegmentation .pth checkpoints and their key table, read
csail.py    the UPerNet authors' encoder + decoder .pth files (synchronized-BN counters), read
semseg.py   the PSPNet author's .pth checkpoints, read
pth.py      weights-only unpickling of .pth files (what the three readers share)
schema.py   bounds of every config value (typed table checks)
common.py   the strict JSON-object reader, class names, the `segcli` block
"""
