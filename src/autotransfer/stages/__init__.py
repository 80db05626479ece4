"""The pipeline's stages: ``pipeline.STAGES`` plus one module per stage (and the torchrun entry point)."""
