"""The served model: a pyfunc that takes raw image files (base64) and returns labels and probabilities.

MLflow stores it as code ("models from code"): loading a version runs ``MODEL_CODE``, not an
unpickled object, and the model carries the library's preprocessing (``serving.predict``).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models.signature import ModelSignature
from mlflow.types.schema import ColSpec, Schema

from autotransfer.config import Params
from autotransfer.models.weights import load_trained_model
from autotransfer.registry.store import connect
from autotransfer.serving.predict import classify

SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "image")]),
    outputs=Schema([ColSpec("string", "label"), ColSpec("double", "probability")]),
)
# The file MLflow stores as the model: loading a version runs this. Written next to the
# model files at logging time.
MODEL_CODE = """\
from mlflow.models import set_model

from autotransfer.registry.pyfunc import ImageClassifier

set_model(ImageClassifier())
"""
REQUIREMENTS = (
    "torch",
    "torchvision",
    "timm",
    "safetensors",
    "pillow",
    "numpy",
    "pandas",
    "pydantic",
    "pyyaml",
    "tqdm",
)


# --------------------------------------------------------------------------- the served model


class ImageClassifier(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
    """pyfunc model: a DataFrame column ``image`` of base64-encoded image files -> ``label``, ``probability``."""

    def load_context(self, context: Any) -> None:
        self._trained = load_trained_model(context.artifacts["model"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        if isinstance(model_input, pd.DataFrame):
            if "image" not in model_input.columns:
                raise ValueError(f"expected a column 'image' (base64 image files), got {list(model_input.columns)}")
            images = model_input["image"].tolist()
        else:
            images = list(model_input)
        predictions = classify(self._trained, images)
        return pd.DataFrame(
            {"label": [p.label for p in predictions], "probability": [p.probability for p in predictions]}
        )


def encode_images(paths: list[Path]) -> pd.DataFrame:
    """Image files as the model's input: one base64 string per file, untouched bytes."""
    return pd.DataFrame({"image": [base64.b64encode(Path(p).read_bytes()).decode("ascii") for p in paths]})


# --------------------------------------------------------------------------- predict


def load_predictor(model: str, params: Params) -> Callable[[list[Path]], list[tuple[str, float]]]:
    """``models:/…`` / ``runs:/…`` URIs through MLflow; a folder (models/target) directly."""
    folder = Path(model)
    if folder.is_dir():
        trained = load_trained_model(folder)
        return lambda paths: [
            (p.label, p.probability)
            for p in classify(trained, [Path(x).read_bytes() for x in paths], [str(x) for x in paths])
        ]
    with connect(params.registry, exclusive=False):
        pyfunc = mlflow.pyfunc.load_model(model)

    def predict(paths: list[Path]) -> list[tuple[str, float]]:
        out = pyfunc.predict(encode_images(paths))
        return list(zip(out["label"].tolist(), out["probability"].astype(float).tolist()))

    return predict
