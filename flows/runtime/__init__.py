"""Prefect plumbing the stage flows share: task runners, concurrency limits, retry and cache policies, run names."""
