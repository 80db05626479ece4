"""The served model: a pyfunc that takes raw image files (base64) and returns labels and probabilities.

MLflow stores it as code ("models from code"): loading a version runs ``MODEL_CODE``, not an
unpickled object, and the model carries the library's preprocessing (``serving.predict``).
"""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models.signature import ModelSignature
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

from autotransfer.config import Params, ServingLimits
from autotransfer.models.weights import load_trained_model
from autotransfer.registry.integrity import verified_copy
from autotransfer.registry.store import connect
from autotransfer.serving.predict import Prediction, Predictor, classify, classify_each

SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "image")]),
    # error: why an image got no label (not an image, too large, past the request's limit); "" when labeled
    outputs=Schema(
        [ColSpec("string", "label"), ColSpec("double", "probability"), ColSpec("string", "error", required=False)]
    ),
    # top_k > 1 adds label_2, probability_2, … label_k, probability_k
    params=ParamSchema([ParamSpec("top_k", "long", 1)]),
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
    """pyfunc model: a DataFrame column ``image`` of base64-encoded image files -> ``label``, ``probability``
    (and, with the param ``top_k``, the next most probable labels as ``label_2``, ``probability_2``, …)."""

    def load_context(self, context: Any) -> None:
        self._trained = load_trained_model(context.artifacts["model"])
        # registry.serving as it was when the version was registered (versions from before: the defaults)
        self.limits = ServingLimits.model_validate(getattr(context, "model_config", None) or {})

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        if isinstance(model_input, pd.DataFrame):
            if "image" not in model_input.columns:
                raise ValueError(f"expected a column 'image' (base64 image files), got {list(model_input.columns)}")
            images = model_input["image"].tolist()
        else:
            images = list(model_input)
        top_k = int((params or {}).get("top_k", 1))
        # One answer per image: a bad one gets its error row, never a failed request with a traceback.
        return predictions_frame(classify_each(self._trained, images, self.limits, top_k=top_k))

    def classify(self, images: list[bytes | str], names: list[str] | None = None, top_k: int = 1) -> list[Prediction]:
        return classify(self._trained, images, names, top_k=top_k)


def predictions_frame(answers: list[Prediction | str]) -> pd.DataFrame:
    """``label``, ``probability``, ``error``, then ``label_2``, ``probability_2``, … as far as the
    predictions go; an image without a prediction has an empty label, no probability and its error."""
    labeled = [a for a in answers if isinstance(a, Prediction)]
    columns: dict[str, list[Any]] = {
        "label": [a.label if isinstance(a, Prediction) else "" for a in answers],
        "probability": [a.probability if isinstance(a, Prediction) else None for a in answers],
        "error": ["" if isinstance(a, Prediction) else a for a in answers],  # text: JSON has no None for it
    }
    for rank in range(2, min((len(p.top) for p in labeled), default=1) + 1):
        columns[f"label_{rank}"] = [a.top[rank - 1][0] if isinstance(a, Prediction) else "" for a in answers]
        columns[f"probability_{rank}"] = [a.top[rank - 1][1] if isinstance(a, Prediction) else None for a in answers]
    return pd.DataFrame(columns)


def encode_images(paths: list[Path]) -> pd.DataFrame:
    """Image files as the model's input: one base64 string per file, untouched bytes."""
    return pd.DataFrame({"image": [base64.b64encode(Path(p).read_bytes()).decode("ascii") for p in paths]})


# --------------------------------------------------------------------------- predict


def load_predictor(model: str, params: Params) -> Predictor:
    """``models:/…`` / ``runs:/…`` URIs through MLflow; a folder (models/target) directly.

    The predictor takes image files and ``top_k``; a file that does not decode raises
    ``ImageDecodeError`` naming it.
    """
    folder = Path(model)
    if folder.is_dir():
        trained = load_trained_model(folder)
        return lambda paths, top_k=1: classify(
            trained, [Path(x).read_bytes() for x in paths], [str(x) for x in paths], top_k=top_k
        )
    # Its files checked against those registered before its code runs (registry/integrity.py).
    with connect(params.registry, exclusive=False) as (_, client), tempfile.TemporaryDirectory() as tmp:
        pyfunc = mlflow.pyfunc.load_model(str(verified_copy(client, model, Path(tmp))))
    # the served code itself, called without the DataFrame round trip: files keep their names in
    # errors, and versions registered before the top_k param still give their top k
    served: ImageClassifier = pyfunc.unwrap_python_model()
    return lambda paths, top_k=1: served.classify(
        [Path(x).read_bytes() for x in paths], [str(x) for x in paths], top_k=top_k
    )
