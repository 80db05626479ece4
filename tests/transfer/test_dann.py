"""DANN's pieces: gradient reversal, its λ schedule, class confusion, pseudo-labels."""

from __future__ import annotations

import math

import pytest
import torch

from autotransfer.models.backbones import TransferModel
from autotransfer.transfer.dann import class_confusion, consistency, dann_lambda, grl


def test_gradient_reversal_is_identity_forward_and_minus_lambda_backward():
    x = torch.randn(5, 3, requires_grad=True)
    y = grl(x, 0.7)
    assert torch.equal(y, x)
    incoming = torch.randn(5, 3)
    y.backward(incoming)
    assert torch.allclose(x.grad, -0.7 * incoming)


def test_lambda_schedule():
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert dann_lambda(1.0) == pytest.approx(0.99991, abs=1e-5)


def test_class_confusion_is_zero_for_confident_distinct_predictions_and_high_for_hedged_ones():
    # given a batch whose images each sit firmly in one class, and one spread over all classes
    confident = 50.0 * torch.eye(4)
    hedged = torch.zeros(4, 4)
    # then only the hedged batch is confused: 1 - 1/C of each row lies off the diagonal, over C
    assert class_confusion(confident).item() == pytest.approx(0.0, abs=1e-6)
    assert class_confusion(hedged).item() == pytest.approx((1 - 1 / 4) * 4 / 4)
    # and a gradient step makes a nearly hedged batch less confused (an empty batch costs nothing)
    logits = (0.5 * torch.randn(16, 4, generator=torch.Generator().manual_seed(0))).requires_grad_()
    before = class_confusion(logits)
    before.backward()
    after = class_confusion(logits.detach() - 1.0 * logits.grad)
    assert after.item() < before.item()
    assert class_confusion(torch.zeros(0, 4)).item() == 0.0


def test_pseudo_labels_from_batch_statistics_leave_the_running_ones_and_take_single_images():
    # given a model in train mode and its BatchNorm running statistics
    torch.manual_seed(0)
    model = TransferModel("small_cnn", 3, 32, bottleneck=16)  # BatchNorm2d in the body, BatchNorm1d in the neck
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for batch in (4, 1):  # a batch, and a single image (no batch statistics: running ones are used)
        images = torch.randn(batch, 3, 32, 32)
        # when pseudo-labels are made for it
        loss = consistency(model, images, torch.randn(batch, 3), threshold=0.0, frozen=[])
        # then the loss is finite, the model is back in train mode and no buffer moved
        assert torch.isfinite(loss) and model.training
        assert all(m.training for m in model.modules())
        for key, value in model.state_dict().items():
            assert torch.equal(value, before[key]), key
