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


STAGES: tuple[Stage, ...] = (
    Stage("validate", "scan the source and target domains and check them with Great Expectations"),
    Stage("pretrain", "train the backbone on the source domain when no pretrained weights are given"),
    Stage("similarity", "measure how far the target is from the source on cached features"),
    Stage("plan", "rank the transfer strategies and choose one, with reasons"),
    Stage("train", "train the chosen strategy"),
    Stage("evaluate", "score the model on the target test split"),
    Stage("register", "register the model in MLflow and promote it if it beats the champion"),
)


def stage_names() -> list[str]:
    return [stage.name for stage in STAGES]
