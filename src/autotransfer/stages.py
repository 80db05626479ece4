"""The pipeline's stages, in order: the one list that dvc.yaml and the Prefect flow follow.

Each stage is one function of the library that reads files and writes files; the CLI
subcommand of the same name (``autotransfer <stage>``) is what dvc.yaml runs, and the
Prefect task of the same name calls the same function.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str
    summary: str
    implemented: bool


STAGES: tuple[Stage, ...] = (
    Stage("validate", "scan the source and target domains and check them with Great Expectations", True),
    Stage("pretrain", "train the backbone on the source domain when no pretrained weights are given", True),
    Stage("similarity", "measure how far the target is from the source on cached features", True),
    Stage("plan", "rank the transfer strategies and choose one, with reasons", True),
    Stage("train", "train the chosen strategy", True),
    Stage("evaluate", "score the model on the target test split", True),
    Stage("register", "register the model in MLflow and promote it if it beats the champion", False),
)


def implemented_stages() -> list[str]:
    return [stage.name for stage in STAGES if stage.implemented]
