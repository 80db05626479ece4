"""Strategies as objects: their phases, param groups, learning rates and augmentation."""

from __future__ import annotations

import pytest

from autotransfer.io.data import load_train_data
from autotransfer.models.weights import backbone_input
from autotransfer.stages.pipeline import VALIDATE
from autotransfer.transfer.strategies import STRATEGIES, Candidate, apply_phase, make_strategy


def set_up(params, name, **train):
    if train:
        params = params.model_copy(update={"train": params.train.model_copy(update=train)})
    strategy = make_strategy(params, Candidate(name))
    strategy.setup(load_train_data(params, strategy.needs.labeled_source, backbone_input(params), progress=False), progress=False)
    return strategy


def lrs(strategy, phase):
    apply_phase(strategy.model, phase)
    return {g["name"].split("/")[0]: g["lr"] for g in strategy.param_groups(phase)}


def test_every_catalog_row_has_its_class_and_the_class_its_rows_needs():
    from autotransfer.catalog import KINDS

    assert set(STRATEGIES) == set(KINDS)
    assert all(cls.name == name and cls.needs == KINDS[name].needs for name, cls in STRATEGIES.items())


def test_a_class_without_a_catalog_row_is_refused():
    from autotransfer.transfer import strategies

    with pytest.raises(ValueError, match=r"unknown strategy 'unlisted'.*catalog\.KINDS"):

        @strategies.register
        class Unlisted(strategies.FinetuneTop):
            name = "unlisted"

    assert "unlisted" not in strategies.STRATEGIES


@pytest.mark.parametrize("name", ["linear_probe", "finetune_top", "progressive"])
def test_optimizer_holds_no_frozen_parameter(ready, name):
    strategy = set_up(ready, name)
    for phase in strategy.phases(6):
        apply_phase(strategy.model, phase)
        in_optimizer = {id(p) for g in strategy.param_groups(phase) for p in g["params"]}
        trainable = {id(p) for p in strategy.model.parameters() if p.requires_grad}
        assert in_optimizer == trainable


def test_no_weight_decay_on_biases_and_norm_parameters(ready):
    strategy = set_up(ready, "finetune_all")
    [phase] = strategy.phases(3)
    apply_phase(strategy.model, phase)
    for group in strategy.param_groups(phase):
        if group["weight_decay"]:
            assert all(p.ndim > 1 for p in group["params"]), group["name"]
        else:
            assert all(p.ndim <= 1 for p in group["params"]), group["name"]


def test_vit_class_token_and_position_embedding_are_not_decayed(ready):
    from autotransfer.models.backbones import TransferModel

    strategy = make_strategy(ready, Candidate("finetune_all"))
    strategy.model, strategy.extra_modules = TransferModel("vit_tiny_patch16_224", 3, 32), []
    [phase] = strategy.phases(3)
    decay = {id(p): g["weight_decay"] for g in strategy.param_groups(phase) for p in g["params"]}
    body = strategy.model.body
    assert ready.train.weight_decay > 0
    assert decay[id(body.cls_token)] == decay[id(body.pos_embed)] == 0.0  # 3-D, but named by timm
    assert decay[id(body.patch_embed.proj.weight)] == decay[id(body.blocks[0].attn.qkv.weight)] > 0
    assert len(decay) == sum(1 for _ in strategy.model.parameters())


def test_progressive_phases_add_groups_with_decreasing_lrs(ready):
    strategy = set_up(ready, "progressive", phase_epochs=1, lr_ratio=2.0, lr=0.08)
    plan = strategy.phases(5)
    assert [p.trainable for p in plan[:4]] == [("head",), ("fc", "head"), ("conv2", "fc", "head"),
                                               ("stem", "conv2", "fc", "head")]
    assert plan[-1].end_epoch == 5
    assert lrs(strategy, plan[3]) == {"head": 0.08, "fc": 0.04, "conv2": 0.02, "stem": 0.01}
    assert lrs(strategy, plan[1]) == {"head": 0.08, "fc": 0.04}


def test_discriminative_lrs_for_finetune_all(ready):
    strategy = set_up(ready, "finetune_all", backbone_lr_mult=0.5, layer_decay=0.5, lr=0.1)
    [phase] = strategy.phases(3)
    assert lrs(strategy, phase) == pytest.approx({"head": 0.1, "fc": 0.05, "conv2": 0.025, "stem": 0.0125})


def test_a_candidates_backbone_multiplier_overrides_the_params(ready):
    strategy = make_strategy(ready, Candidate("finetune_all", backbone_lr_mult=0.1))
    assert strategy.cfg.backbone_lr_mult == 0.1 and strategy.label == "finetune_all@0.1x"


def test_dann_uses_its_own_lr_and_layer_decay_and_trains_the_domain_classifier_at_the_heads(ready):
    finetune = set_up(ready, "finetune_all", layer_decay=0.5, lr=0.1)
    # given train.layer_decay 0.5 (finetune_all's) and dann.layer_decay 0.8, dann.lr 0.1
    params = ready.model_copy(update={"data": ready.data.model_copy(update={"labeled_per_class": 0})})
    VALIDATE.run(params, progress=False)
    dann_cfg = params.train.dann.model_copy(update={"layer_decay": 0.8, "lr": 0.1})
    dann = set_up(params, "dann", layer_decay=0.5, dann=dann_cfg)
    [phase] = dann.phases(3)
    # then dann's body groups decay by 0.8 per group, finetune_all's by 0.5
    assert lrs(dann, phase) == pytest.approx({"head": 0.1, "fc": 0.1, "conv2": 0.08, "stem": 0.064})
    head_params = {id(p) for g in dann.param_groups(phase) if g["name"].startswith("head") for p in g["params"]}
    assert {id(p) for p in dann.domain.parameters()} <= head_params
    assert lrs(finetune, finetune.phases(3)[0])["stem"] == pytest.approx(0.025)


def test_dann_labels_its_labeled_target_rows_target_for_the_domain_classifier(ready):
    import torch

    # given a target with labeled train images, which dann learns classes from beside the source
    dann = set_up(ready, "dann")
    n_source, n_target = len(dann.data.source_train), len(dann.data.train)
    assert n_source and n_target and len(dann.pool_images) == n_source + n_target
    # then the domain classifier sees each labeled row as the domain its image came from
    domains = dann.domain_labels(torch.arange(n_source + n_target))
    assert domains.tolist() == [0.0] * n_source + [1.0] * n_target
    target_rows = torch.arange(n_source, n_source + n_target)
    assert torch.equal(dann.pool_images[target_rows], dann.data.train.images[torch.arange(n_target)])


def test_dann_annealing_is_a_scheduler_stepped_like_every_other(ready):
    import torch

    params = ready.model_copy(update={"data": ready.data.model_copy(update={"labeled_per_class": 0})})
    VALIDATE.run(params, progress=False)
    dann = set_up(params, "dann")
    [phase] = dann.phases(3)
    apply_phase(dann.model, phase)
    optimizer, scheduler = dann.configure(phase, steps=10)
    base = [g["lr"] for g in optimizer.param_groups]
    seen = []
    for _ in range(10):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # lr·(1+10p)^−0.75 at p = step / steps, the base LR untouched
    assert seen == pytest.approx([base[0] * (1 + 10 * k / 10) ** -0.75 for k in range(10)])
    assert [g["initial_lr"] for g in optimizer.param_groups] == base
    assert isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler)


def test_colour_augmentation_auto_follows_the_data(ready):
    gray = set_up(ready, "scratch")
    assert not gray.data.has_colour  # the tiny domains are saved as grayscale PNGs

    def flags(name, colour, **train):
        params = ready.model_copy(update={"train": ready.train.model_copy(update=train)}) if train else ready
        which = make_strategy(params, Candidate(name)).augmentation(colour)
        return which.geometric, which.colour

    assert flags("scratch", False) == (True, False)
    assert flags("dann", False) == (True, False)
    # colour data: on where a model crosses domains, off where it learns the target's own labels
    assert flags("dann", True) == (True, True)
    assert flags("scratch", True) == (True, False)
    assert flags("finetune_all", True) == (True, False)
    per_strategy = {"scratch": ready.train.augment.model_copy(update={"color": True, "geometric": False})}
    assert flags("scratch", False, augment_per_strategy=per_strategy) == (False, True)
    assert flags("finetune_all", False, augment_per_strategy=per_strategy) == (True, False)


def test_a_new_strategy_is_one_catalog_row_and_one_class(ready, tmp_path, monkeypatch):
    from autotransfer.engine.loop import fit
    from autotransfer.transfer import strategies

    # given a strategy that only differs in which groups train (the head and the top group, at 10x)
    from autotransfer import catalog
    from autotransfer.requirements import Needs

    monkeypatch.setattr(strategies, "STRATEGIES", dict(strategies.STRATEGIES))
    monkeypatch.setitem(catalog.KINDS, "top_at_10x", catalog.StrategyKind("top_at_10x", Needs(target_labels=True)))

    @strategies.register
    class TopAtTenX(strategies.FinetuneTop):
        name = "top_at_10x"

        def body_lr(self, depth):
            return 10 * self.head_lr()

    # when the generic loop trains it
    data = load_train_data(ready, False, backbone_input(ready), progress=False)
    result = fit(ready, Candidate("top_at_10x"), data, tmp_path / "run", 2, progress=False)
    # then it trained like any other strategy
    assert result.epochs_run == 2 and result.val_accuracy is not None
    assert strategies.strategy_class("top_at_10x") is TopAtTenX
