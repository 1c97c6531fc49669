"""On-disk formats, one module each, reading and writing side by side.

`hf`        transformers' `config.json` + `preprocessor_config.json` (UperNetForSemanticSegmentation), read
`native`    segcli's own model directory (`"format": "segcli/1"` config.json + model.safetensors), read and write
`sidecar`   the JSON beside an exported ONNX / TorchScript file (`segcli-export/1`), read and write
`mmseg`     mmsegmentation `.pth` checkpoints (`torch.load(weights_only=True)`) and their key table, read
`jsonfile`  the strict JSON-object reader they share
"""
