"""`segcli.ray`: segmentation on Ray Data (the `[ray]` extra), as a public module; see `segcli.batch.ray`."""

from .batch.ray import Job, cluster_defaults, connect, job_for, run, segment

__all__ = ["Job", "cluster_defaults", "connect", "job_for", "run", "segment"]
