"""Prefect tasks of the restore flow. They exchange run configurations, shard descriptions and URLs, never tensors."""
