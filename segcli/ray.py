"""`segcli.ray`: segmentation on Ray Data (the `[ray]` extra), as a public module; see `segcli.batch.ray`."""

from .batch.ray import Job, job_for, run, segment
from .batch.ray_connect import cluster_defaults, connect

__all__ = ["Job", "cluster_defaults", "connect", "job_for", "run", "segment"]
