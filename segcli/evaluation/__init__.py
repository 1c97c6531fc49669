"""`segcli evaluate`'s library: predictions against ground truth.

evaluate.py  pairing prediction and ground-truth files, parallel accumulation, the JSON / CSV report
metrics.py   the confusion matrix and the scores computed from it (mmseg's IoUMetric)
"""
