"""A tiny, fast configuration of the whole pipeline for stage tests."""

from pathlib import Path

from autotransfer.config import Params
from conftest import params_for


def tiny_params(root: Path, work: Path, **sections: dict) -> Params:
    base = {
        "backbone": {"arch": "small_cnn", "weights": None, "input_size": 32},
        "pretrain": {"out": str(work / "models/source"), "epochs": 2, "batch_size": 8},
        # The floor (a probe and a pixel baseline on target val) is tested on its own: on these
        # noise images it would replace the model under test at random.
        # These folders have 2 val images per class: let val choose (as on a real target with
        # enough of them), and 10 epochs unless a test says otherwise (the step rule would give
        # a 12-image pool 150 epochs). tests/stages/test_train.py tests both rules at their defaults.
        "train": {"out": str(work / "models/target"), "floor": False, "min_val_per_class": 1, "min_steps": 1},
        "reports": {"dir": str(work / "reports")},
        "validation": {"state_dir": str(work / "scan-state")},
        "data": {"decoded_cache": str(work / "decoded")},
        "similarity": {"n_per_domain": 20, "max_labeled": 100, "probe_folds": 2,
                       "cache_dir": str(work / "cache")},
        # every stage command writes the live MLflow run: to this test's store, never the checkout's
        "registry": {"tracking_uri": f"sqlite:///{work / 'mlflow.db'}"},
    }
    for key, values in sections.items():
        base[key] = {**base.get(key, {}), **values}
    return params_for(root, **base)


def plan_ready(params: Params) -> Params:
    """The stages before train (validate -> pretrain -> similarity -> plan): everything train reads."""
    from autotransfer.stages.pipeline import TRAIN, stages_before

    stages_before(TRAIN, params, progress=False)
    return params


def nan_cross_entropy(monkeypatch) -> None:
    """A fault to inject: every cross-entropy the strategies' steps compute is NaN."""
    import torch

    from autotransfer.transfer import adaptation, probe, strategies

    class NanFunctional:
        def __getattr__(self, name):
            return getattr(torch.nn.functional, name)

        @staticmethod
        def cross_entropy(*args, **kwargs):
            return torch.nn.functional.cross_entropy(*args, **kwargs) * float("nan")

    for module in (strategies, adaptation, probe):  # every module whose strategies compute a loss
        monkeypatch.setattr(module, "F", NanFunctional())
