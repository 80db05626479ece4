"""Prefect tasks: one thin wrapper per pipeline stage of ``autotransfer.stages.pipeline``, nothing else."""
