"""From a `--model` value to a described, strictly loaded network: everything that reads model files.

info.py        ModelInfo (what every source resolves to) and Origin (where it came from)
registry.py    weights.toml (+ a user registry) → frozen ModelSpecs
sources.py     a `--model` value → ModelInfo + local weights (registry name, Hub repo, directory, .pth, .onnx)
hub.py         huggingface_hub and URL downloads into the cache, revisions, offline mode, sha256 checks
checkpoint.py  safetensors reading and the strict key / shape report
convert.py     the three labs' .pth checkpoints → a segcli/1 model directory
classes.py     class sets and palettes (the bundled ones in data/)
formats/       the on-disk model formats, one module each, reading and writing side by side
"""
