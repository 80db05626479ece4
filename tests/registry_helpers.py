"""A small trained pipeline on the demo data, and variants of it, for registry and flow tests."""

from __future__ import annotations

import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

from autotransfer.config import Params
from autotransfer.stages.pipeline import EVALUATE, REGISTER, stages_before
from stage_helpers import tiny_params


def demo_params(demo_root: Path, work: Path, store: str | None = None, **sections: dict) -> Params:
    """synth-digits -> digits with 20 labels per class on small_cnn: a real, learnable task in seconds."""
    base = {
        "data": {"source": "synth-digits", "target": "digits", "labeled_per_class": 20},
        "pretrain": {"epochs": 1, "batch_size": 64},
        "train": {"epochs": 2, "batch_size": 32},
        "registry": {"tracking_uri": store or f"sqlite:///{work.parent / 'mlflow.db'}"},
        # the small row's own choice, not dann_mcc_pl first: these tests exercise the pipeline, not that rule
        "strategy": {"dann_below_per_class": 20},
    }
    for key, values in sections.items():
        base[key] = {**base.get(key, {}), **values}
    return tiny_params(demo_root, work, **base)


def run_pipeline(params: Params) -> Params:
    stages_before(REGISTER, params, progress=False)  # the tests register (or not) themselves
    return params


def variant(params: Params, work: Path, constant_class: int | None = None, **sections: dict) -> Params:
    """A copy of a trained pipeline's outputs in ``work``, registering to ``work.parent/mlflow.db``;
    with ``constant_class``, a model that always answers that class (a deliberately bad
    challenger), re-evaluated; ``sections`` override params (``registry={"model_name": ...}``)."""
    src_work = Path(params.reports.dir).parent
    shutil.copytree(src_work, work, dirs_exist_ok=False,
                    ignore=shutil.ignore_patterns("runs", "cache"))
    raw = params.model_dump(mode="json")
    for section, key in (("reports", "dir"), ("train", "out"), ("pretrain", "out")):
        raw[section][key] = str(work / Path(raw[section][key]).relative_to(src_work))
    raw["registry"]["tracking_uri"] = f"sqlite:///{work.parent / 'mlflow.db'}"  # one store per test folder
    for key, values in sections.items():
        raw[key] = {**raw[key], **values}
    copied = Params.model_validate(raw)
    if constant_class is not None:
        weights = Path(copied.train.out) / "model.safetensors"
        tensors = load_file(weights)
        tensors["head.weight"].zero_()
        tensors["head.bias"].zero_()
        tensors["head.bias"][constant_class] = 10.0
        save_file(tensors, str(weights))
        EVALUATE.run(copied, progress=False)
    return copied
