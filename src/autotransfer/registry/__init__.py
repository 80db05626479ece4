"""MLflow tracking and the model registry: the one package that imports mlflow (see store.py)."""

from typing import Any


def __getattr__(name: str) -> Any:
    # Model versions registered before the package layout (0.1) load their pyfunc from here.
    if name == "ImageClassifier":
        from autotransfer.registry.pyfunc import ImageClassifier

        return ImageClassifier
    raise AttributeError(name)
