"""Prefect flows: the retraining job, its schedules and deployments (only flows/ and tasks/ import Prefect)."""
