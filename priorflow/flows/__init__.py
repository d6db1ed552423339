"""Prefect flows of priorflow."""
