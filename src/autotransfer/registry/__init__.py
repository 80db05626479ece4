"""MLflow tracking and the model registry (``store``, the one module that imports mlflow) and promotion rules."""

from typing import Any


def __getattr__(name: str) -> Any:
    # Model versions registered before the package layout (0.1) load their pyfunc from here.
    if name == "ImageClassifier":
        from autotransfer.registry.store import ImageClassifier

        return ImageClassifier
    raise AttributeError(name)
