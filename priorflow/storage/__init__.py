"""priorflow.storage: datasets and restoration outputs as Zarr v3 on any fsspec URL (local, file://, s3://, memory://)."""
