"""`segcli quantize`: post-training static int8 of a model's convolutions and linears, checked before it is
written. `calibrate.py` (the preset's views of the calibration images, recorded without running the network;
the ONNX export quantized by onnxruntime in the QDQ form), `check.py` (the int8 model against float32:
labels, speed, mIoU with ground truth; the gates), `workflow.py` (`quantize`: export, calibrate, check,
write or refuse)."""
