"""The transfer strategies the product knows: one row each, the only list of their names and traits.

Everything that names strategies reads this table: the params' allowed values
(``config``: ``strategy.force``, ``train.augment_per_strategy``), the plan's exclusions and
weak-backbone rule (``analysis.planning``), plan.json's components, and the trainer's input
check (``transfer.strategies``: a class is registered under a row's name and checks the row's
``needs``). The table sits below config so that validating params imports no torch.

Adding a strategy: one row here, one class in transfer/ (docs/extending.md).
The row order is the order plan.json lists exclusions in.
"""

from __future__ import annotations

from dataclasses import dataclass

from autotransfer.requirements import Needs

_GRL = "gradient reversal + domain classifier (λ = 2/(1+e^-10p) - 1)"
_ANNEALED = "SGD annealed as lr·(1+10p)^-0.75"


@dataclass(frozen=True)
class StrategyKind:
    """What a strategy is, as the config, the plan and the trainer need to know it."""

    name: str
    needs: Needs  # what it cannot run without (the trainer refuses, the plan excludes: requirements.py)
    frozen_backbone: bool = False  # the pretrained body stays (mostly) frozen: weak features cap it
    adaptation: bool = False  # adapts on unlabeled target images (the plan excludes it when there are none)
    components: tuple[str, ...] = ()  # what it adds to the classification loss (plan.json names the chosen one's)


KINDS: dict[str, StrategyKind] = {
    kind.name: kind
    for kind in (
        StrategyKind("linear_probe", Needs(target_labels=True), frozen_backbone=True),
        StrategyKind("finetune_top", Needs(target_labels=True), frozen_backbone=True),
        StrategyKind("progressive", Needs(target_labels=True)),
        StrategyKind("finetune_all", Needs(target_labels=True)),
        StrategyKind("scratch", Needs(target_labels=True)),
        StrategyKind(
            "dann_mcc_pl",
            Needs(labeled_source=True, target_images=True),
            adaptation=True,
            components=(
                _GRL,
                "entropy minimisation on target predictions (train.dann.entropy_weight)",
                "Minimum Class Confusion on target predictions (train.dann.mcc_weight)",
                "FixMatch-style pseudo-labels, target-batch BatchNorm statistics (train.dann.pseudo_label_weight)",
                _ANNEALED,
            ),
        ),
        StrategyKind(
            "dann", Needs(labeled_source=True, target_images=True), adaptation=True, components=(_GRL, _ANNEALED)
        ),
        StrategyKind("source_only", Needs(labeled_source=True), frozen_backbone=True),
    )
}


def unknown_strategy(name: str) -> str | None:
    """Why ``name`` is not a strategy (naming the known ones), or None when it is one."""
    return None if name in KINDS else f"unknown strategy {name!r} (known: {', '.join(KINDS)})"
