"""What a strategy needs from the data: one check, read by the plan and by the trainer.

Each strategy carries its ``Needs`` (its row in catalog.py; the class in transfer/ checks it). The plan stage passes
them to the rules, which exclude a strategy whose needs the target does not meet
(analysis/planning.py); train checks the same ``Needs`` against the images it loaded before
it builds a model. So a plan never chooses what the trainer refuses, and the reason a
strategy cannot run reads the same in plan.json and in train's error.

These are facts about the data, not preferences: the plan's rules may exclude more (for
example adaptation without unlabeled target images, or training on fewer labels than
``strategy.none_below_per_class``), and say so in plan.json.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataFacts:
    """What the data offers a strategy, as validate counted it (plan) or train loaded it."""

    labeled_min_per_class: int  # labeled target images (train + val) in the smallest target class
    labeled_target: int  # labeled target images (train + val) in all
    unlabeled_target: int  # target images without labels
    labeled_source: bool  # data.source is set: a labeled source domain
    target_classes_in_source: bool  # every target class is a source class


@dataclass(frozen=True)
class Needs:
    """What a strategy needs to run at all."""

    target_labels: bool = False  # learns from the target's labels
    labeled_source: bool = False  # learns from (or is) a labeled source whose classes cover the target's
    target_images: bool = False  # adapts on target images (unlabeled, or labeled ones used without labels)

    def unmet(self, facts: DataFacts) -> str | None:
        """Why the strategy cannot run on this data, or None when it can."""
        if self.labeled_source and not facts.labeled_source:
            return "no labeled source domain (data.source is null): the backbone's pretraining data is the source"
        if self.labeled_source and not facts.target_classes_in_source:
            return "the target has classes the source does not"
        if self.target_labels and facts.labeled_min_per_class == 0:
            return "needs labeled target images in every class (a class has none)"
        if self.target_images and facts.unlabeled_target + facts.labeled_target == 0:
            return "no target images to adapt on"
        return None
