"""The CUDA path: device-side augmentation, bf16 autocast and channels_last (skipped without CUDA)."""

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_augmentation_on_the_gpu_draws_what_the_cpu_draws():
    from autotransfer.transfer.augment import Augmentation, augment

    x = torch.randint(0, 256, (16, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    which = Augmentation(True, True, True, True)
    cpu = augment(x, torch.Generator().manual_seed(1), which)
    gpu = augment(x.cuda(), torch.Generator().manual_seed(1), which).cpu()
    # the same random parameters; the interpolation may round a few pixels the other way
    assert (cpu.int() - gpu.int()).abs().max() <= 1
    assert (cpu != gpu).float().mean() < 0.01


def test_a_timm_model_trains_on_cuda_in_bf16_channels_last(data_root, tmp_path):
    from autotransfer.engine.loop import fit
    from autotransfer.io.data import load_train_data
    from autotransfer.models.weights import backbone_input
    from autotransfer.transfer.strategies import Candidate
    from stage_helpers import plan_ready, tiny_params

    params = plan_ready(tiny_params(data_root, tmp_path, backbone={"arch": "tf_efficientnet_lite0",
                                                                    "weights": "imagenet", "input_size": 64},
                                    train={"epochs": 2, "batch_size": 4, "device": "cuda"}))
    data = load_train_data(params, False, backbone_input(params), progress=False)
    result = fit(params, Candidate("finetune_all"), data, tmp_path / "runs", 2, False)
    assert next(result.model.parameters()).is_cuda
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in result.history)
    assert result.history[-1]["images_per_second"] > 0
