"""The training loop on tiny real data: what trains, what stays frozen, resume, failures."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from autotransfer.engine.loop import fit
from autotransfer.errors import TrainingError
from autotransfer.io.data import load_train_data
from autotransfer.models.weights import backbone_input
from autotransfer.transfer.strategies import Candidate, strategy_class
from autotransfer.stages.pipeline import VALIDATE
from conftest import make_domain
from stage_helpers import nan_cross_entropy


def source_body_state(params):
    from autotransfer.models.weights import load_backbone

    return {k: v.clone() for k, v in load_backbone(params, 2).model.body.state_dict().items()}


def run(params, strategy, tmp_path, epochs=3, stop_after=None, **kw):
    data = load_train_data(params, strategy_class(strategy).needs.labeled_source, backbone_input(params), progress=False)
    return fit(params, Candidate(strategy, **kw), data, tmp_path / "runs" / strategy, epochs, False, stop_after)


def test_linear_probe_leaves_the_whole_body_bit_identical(ready, tmp_path):
    before = source_body_state(ready)
    result = run(ready, "linear_probe", tmp_path)
    after = result.model.body.state_dict()
    for key, value in before.items():
        assert torch.equal(after[key], value), key  # weights and BatchNorm running stats


def test_finetune_top_trains_only_the_top_group_and_frozen_bn_keeps_its_stats(ready, tmp_path):
    before = source_body_state(ready)
    result = run(ready, "finetune_top", tmp_path)
    after = result.model.body.state_dict()
    top = [k for k in before if k.startswith("fc.")]  # small_cnn's last group
    frozen = [k for k in before if not k.startswith("fc.")]
    assert any("running_mean" in k for k in frozen)
    for key in frozen:
        assert torch.equal(after[key], before[key]), key
    assert any(not torch.equal(after[k], before[k]) for k in top)


def test_dann_mcc_pl_class_confusion_is_on_by_default_and_can_be_turned_off(ready, tmp_path):
    params = ready.model_copy(update={"data": ready.data.model_copy(update={"labeled_per_class": 0})})
    VALIDATE.run(params, progress=False)
    assert params.train.dann.mcc_weight == 1.0
    confused = run(params, "dann_mcc_pl", tmp_path / "mcc", epochs=1)
    off = params.model_copy(update={"train": params.train.model_copy(update={
        "dann": params.train.dann.model_copy(update={"mcc_weight": 0.0})})})
    plain = run(off, "dann_mcc_pl", tmp_path / "plain", epochs=1)
    assert confused.history[0]["train_loss"] != plain.history[0]["train_loss"]


def test_plain_dann_is_the_adversarial_loss_alone(ready, tmp_path):
    # given the self-training weights at their defaults, and all three switched off
    params = ready.model_copy(update={"data": ready.data.model_copy(update={"labeled_per_class": 0})})
    VALIDATE.run(params, progress=False)
    off = params.model_copy(update={"train": params.train.model_copy(update={
        "dann": params.train.dann.model_copy(update={"entropy_weight": 0.0, "mcc_weight": 0.0,
                                                     "pseudo_label_weight": 0.0})})})
    dann, dann_off = run(params, "dann", tmp_path / "a", epochs=1), run(off, "dann", tmp_path / "b", epochs=1)
    recipe_off = run(off, "dann_mcc_pl", tmp_path / "c", epochs=1)
    recipe = run(params, "dann_mcc_pl", tmp_path / "d", epochs=1)
    # then dann never uses them: it trains exactly as dann_mcc_pl with all three off, and unlike the recipe
    state = dann.model.state_dict()
    for key, value in recipe_off.model.state_dict().items():
        assert torch.equal(state[key], value), key
        assert torch.equal(dann_off.model.state_dict()[key], value), key
    assert dann.history[0]["train_loss"] != recipe.history[0]["train_loss"]


def test_select_last_keeps_the_last_epoch_even_with_labeled_val(ready, tmp_path):
    # given labeled target val and a learning rate that makes the val curve move
    best = run(ready, "finetune_all", tmp_path / "best", epochs=4)
    last_params = ready.model_copy(update={"train": ready.train.model_copy(update={"select": "last", "patience": 1})})
    last = run(last_params, "finetune_all", tmp_path / "last", epochs=4)
    # then best_val keeps the best val epoch, last keeps epoch 4 and never stops early
    vals = [h["val_accuracy"] for h in best.history]
    assert best.best_epoch == 1 + vals.index(max(vals))
    assert last.best_epoch == 4 and last.epochs_run == 4


def test_pseudo_labels_wait_for_their_share_of_the_run(ready, tmp_path):
    params = ready.model_copy(update={"data": ready.data.model_copy(update={"labeled_per_class": 0})})
    VALIDATE.run(params, progress=False)

    def dann_with(tag, **dann):
        changed = params.model_copy(update={"train": params.train.model_copy(update={
            "dann": params.train.dann.model_copy(update=dann)})})
        return [h["train_loss"] for h in run(changed, "dann_mcc_pl", tmp_path / tag, epochs=2).history]

    # given the pseudo-label term on from the start, from 99 % of the run (never, in 2 short epochs), or off
    off = dann_with("off", pseudo_label_weight=0.0, pseudo_label_threshold=0.01)
    late = dann_with("late", pseudo_label_weight=1.0, pseudo_label_threshold=0.01, pseudo_label_from=0.99)
    early = dann_with("early", pseudo_label_weight=1.0, pseudo_label_threshold=0.01)
    # then a term that has not started changes nothing, and one that has changes the loss
    assert late == off and early != off


def test_dann_trains_with_source_labels_and_logs_domain_accuracy(ready, tmp_path):
    params = ready.model_copy(update={"data": ready.data.model_copy(update={"labeled_per_class": 0})})
    VALIDATE.run(params, progress=False)
    result = run(params, "dann", tmp_path, epochs=2)
    assert result.head_classes == ("a", "b")
    assert all(0 <= h["domain_accuracy"] <= 1 for h in result.history)
    assert result.best_epoch == 2  # no labeled target val: the last epoch


@pytest.mark.parametrize("strategy, stop", [("finetune_all", 1), ("progressive", 2)])
def test_resume_after_epoch_k_ends_with_the_same_weights(ready, tmp_path, strategy, stop):
    # given phase_epochs=3, so that stopping after epoch 2 is in the middle of phase 0->1
    params = ready.model_copy(update={"train": ready.train.model_copy(update={"phase_epochs": 3})})
    uninterrupted = run(params, strategy, tmp_path / "a", epochs=5)
    # when a run stops after epoch k and is started again
    partial = run(params, strategy, tmp_path / "b", epochs=5, stop_after=stop)
    assert partial.epochs_run == stop
    resumed = run(params, strategy, tmp_path / "b", epochs=5)
    # then it resumed (not restarted) and ends bit-identical to the uninterrupted run
    assert resumed.resumed_from == stop
    for key, value in uninterrupted.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in uninterrupted.history]


def test_changed_params_do_not_resume_a_foreign_checkpoint(ready, tmp_path):
    run(ready, "scratch", tmp_path, epochs=3, stop_after=1)
    other = ready.model_copy(update={"train": ready.train.model_copy(update={"lr": 0.02})})
    assert run(other, "scratch", tmp_path, epochs=3).resumed_from == 0


def test_corrupted_checkpoint_is_not_used(ready, tmp_path):
    run(ready, "scratch", tmp_path, epochs=3, stop_after=1)
    checkpoint = tmp_path / "runs/scratch/checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    assert run(ready, "scratch", tmp_path, epochs=3).resumed_from == 0


def test_non_finite_loss_stops_with_the_step_and_writes_no_model(ready, tmp_path, monkeypatch):
    from autotransfer.stages import train as train_stage
    from autotransfer.stages.pipeline import PLAN, SIMILARITY

    SIMILARITY.run(ready, progress=False)
    PLAN.run(ready)

    nan_cross_entropy(monkeypatch)
    forced = ready.model_copy(update={"strategy": ready.strategy.model_copy(update={"force": "scratch"})})
    with pytest.raises(TrainingError, match=r"non-finite loss \(nan\) at epoch 1, step 1"):
        train_stage.train_stage(forced, progress=False)
    assert not (Path(ready.train.out) / "model.safetensors").exists()


def test_linear_probe_does_no_backbone_forward_once_the_cache_is_warm(ready, tmp_path, monkeypatch):
    from autotransfer.transfer.probe import LinearProbe

    run(ready, "linear_probe", tmp_path / "warm")  # fills the feature cache
    calls = []
    original = LinearProbe.build

    def counting_build(self, data):
        model, norm, classes = original(self, data)
        model.body.register_forward_hook(lambda *_: calls.append(1))
        return model, norm, classes

    monkeypatch.setattr(LinearProbe, "build", counting_build)
    run(ready, "linear_probe", tmp_path / "again")
    assert calls == []


def test_source_only_is_the_source_model_untrained(ready, tmp_path):
    result = run(ready, "source_only", tmp_path)
    assert result.epochs_run == 0 and result.history == []
    assert result.val_accuracy is not None


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_resumes_to_the_same_result(data_root, tmp_path):
    # given a run slow enough to kill mid-way (many tiny steps)
    root = tmp_path / "big"
    make_domain(root, "src", n_train=60, seed=1)
    make_domain(root, "tgt", n_train=60, seed=2)
    config = {
        "data": {"root": str(root), "source": "src", "target": "tgt"},
        "backbone": {"arch": "small_cnn", "weights": None, "input_size": 32},
        "pretrain": {"out": str(tmp_path / "models/source"), "epochs": 1, "batch_size": 8},
        "similarity": {"n_per_domain": 20, "probe_folds": 2, "cache_dir": str(tmp_path / "cache")},
        "reports": {"dir": str(tmp_path / "reports")},
        "strategy": {"force": "progressive"},
        "registry": {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"},  # not the checkout's store
        "train": {"epochs": 6, "phase_epochs": 3, "batch_size": 2, "patience": 0, "floor": False,
                  "out": str(tmp_path / "models/target")},
    }
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(config))
    exe = Path(sys.executable).with_name("autotransfer")
    from autotransfer.cli import main

    for stage in ("validate", "pretrain", "similarity", "plan"):  # in this process: what is tested is train's
        assert main([stage, "--params", str(params_file), "--no-progress"]) == 0
    reference_config = {**config, "train": {**config["train"], "out": str(tmp_path / "reference")}}
    (tmp_path / "reference.yaml").write_text(yaml.safe_dump(reference_config))
    subprocess.run([str(exe), "train", "--params", str(tmp_path / "reference.yaml"), "--no-progress"], check=True,
                   capture_output=True)
    # when the training process is SIGKILLed after its first checkpoint (mid phase 0)
    process = subprocess.Popen([str(exe), "train", "--params", str(params_file), "--no-progress"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "models/target/runs/progressive/checkpoint.pt"
    deadline = time.time() + 120
    while not checkpoint.exists() and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = torch.load(checkpoint, weights_only=True)["epoch"]
    assert 1 <= killed_at < 6 and not (tmp_path / "models/target/model.safetensors").exists()
    # and the same command runs again
    out = subprocess.run([str(exe), "train", "--params", str(params_file), "--no-progress"], check=True,
                         capture_output=True, text=True).stdout
    # then it resumed and its model is byte-identical to the uninterrupted reference
    assert f"resumed from epoch {killed_at}" in out
    assert (tmp_path / "models/target/model.safetensors").read_bytes() == \
        (tmp_path / "reference/model.safetensors").read_bytes()


def test_a_changed_starting_model_does_not_resume_an_old_run(ready, tmp_path):
    from safetensors.torch import load_file, save_file

    # given a finished run from the current source model
    run(ready, "finetune_all", tmp_path, epochs=2)
    # when the source model's weights change while every param stays the same (new code, say)
    weights = Path(ready.pretrain.out) / "model.safetensors"
    state = load_file(str(weights))
    state["body.conv1.0.weight"] = state["body.conv1.0.weight"] + 0.01
    save_file(state, str(weights))
    # then training starts afresh instead of resuming the stale checkpoint
    assert run(ready, "finetune_all", tmp_path, epochs=2).resumed_from == 0


def test_resume_keeps_the_early_stopping_state(ready, tmp_path):
    params = ready.model_copy(update={"train": ready.train.model_copy(update={"patience": 1})})
    uninterrupted = run(params, "scratch", tmp_path / "a", epochs=6)
    run(params, "scratch", tmp_path / "b", epochs=6, stop_after=2)
    resumed = run(params, "scratch", tmp_path / "b", epochs=6)
    assert resumed.epochs_run == uninterrupted.epochs_run and resumed.best_epoch == uninterrupted.best_epoch


def test_a_last_batch_of_one_image_is_topped_up_so_batchnorm_can_train():
    from autotransfer.engine.ddp import World
    from autotransfer.engine.loop import shard

    order = torch.randperm(65, generator=torch.Generator().manual_seed(0))
    # 65 images at batch 64: the second batch would hold one image, which BatchNorm refuses in training
    last = shard(order, 64, 64, World())
    assert last.tolist() == [order[64].item(), order[0].item()]
    assert shard(order, 0, 64, World()).tolist() == order[:64].tolist()  # full batches unchanged
    # on two ranks each gets two of the last batch's (topped-up) images
    ranks = [shard(order, 64, 64, World(rank, 2)).tolist() for rank in (0, 1)]
    assert [len(r) for r in ranks] == [2, 2] and ranks[0][0] == order[64].item()
    # a batch size of one stays one
    assert len(shard(order, 64, 1, World())) == 1
