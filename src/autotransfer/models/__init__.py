"""Architectures, their layer groups, all weight loading, cached frozen features."""
