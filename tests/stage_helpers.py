"""A tiny, fast configuration of the whole pipeline for stage tests."""

from pathlib import Path

from autotransfer.config import Params
from conftest import params_for


def tiny_params(root: Path, work: Path, **sections: dict) -> Params:
    base = {
        "backbone": {"arch": "small_cnn", "input_size": 32},
        "pretrain": {"out": str(work / "models/source"), "epochs": 2, "batch_size": 8},
        "train": {"out": str(work / "models/target")},
        "reports": {"dir": str(work / "reports")},
        "similarity": {"n_per_domain": 20, "max_labeled": 100, "probe_folds": 2,
                       "cache_dir": str(work / "cache")},
    }
    for key, values in sections.items():
        base[key] = {**base.get(key, {}), **values}
    return params_for(root, **base)
