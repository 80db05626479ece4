"""Running the system: the team stack, DVC bookkeeping, torchrun launch, telemetry."""
