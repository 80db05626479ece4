"""The generic training loop, its checkpoints, DDP helpers and the race between candidates."""
