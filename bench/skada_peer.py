"""skada's DANN, the domain-adaptation peer of bench/dann.py (bench-only: skada 0.6.0 and skorch
live in .venv-peers, never in the project's dependencies).

What it shares with our columns: the same source model (pretrained on the source domain), the
same network (its body, a new bottleneck of train.dann.bottleneck and a new head over the source
classes), the same labeled source train and unlabeled target train images with the same
augmentation (both domains), SGD with momentum 0.9 at train.dann.lr annealed as
lr·(1+10p)^-0.75, train.batch_size images of each domain per step, about the same optimizer
steps, and the last epoch. What differs: skada's own DANN loop (its BCE domain loss at reg=1,
gradient reversal at a fixed 1: no λ ramp; its domain classifier, 100 wide with BatchNorm),
weight decay on every parameter, and one fix to that domain classifier: skada 0.6.0's
default ends in a Softmax over a single output, which is 1 for every input and passes no
gradient, so DANN would train as source-only; the peer keeps its layers and ends in a Sigmoid.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import nn

from autotransfer.config import Params
from autotransfer.io.data import (
    Normalization,
    class_names,
    domain_rows,
    load_images,
    load_train_data,
    read_manifest,
)
from autotransfer.models.weights import backbone_input, load_backbone
from autotransfer.transfer.augment import Augmentation, augment
from autotransfer.transfer.strategies import Candidate, make_strategy

SOURCE, TARGET = 1, -2  # skada's sample_domain: positive for source, negative for target


class _Classifier(nn.Module):
    """The source model with the bottleneck and head, fed uint8 images as our loop feeds them:
    augmented in training (both domains' halves of the batch), then normalised."""

    def __init__(self, model: nn.Module, normalization: Normalization, which: Augmentation, seed: int) -> None:
        super().__init__()
        self.model, self.normalization, self.which = model, normalization, which
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, x: torch.Tensor, sample_weight: Any = None) -> torch.Tensor:
        if self.training:
            x = augment(x, self.generator, self.which)
        out: torch.Tensor = self.model(self.normalization(x))
        return out


def domain_classifier_defect() -> float:
    """The gradient skada 0.6.0's default domain classifier passes back (0.0: it cannot learn)."""
    from skada.deep.modules import DomainClassifier

    x = torch.randn(16, 8, requires_grad=True)
    nn.functional.binary_cross_entropy(DomainClassifier(num_features=8)(x), torch.zeros(16)).backward()
    assert x.grad is not None
    return float(x.grad.norm())


def run_skada_dann(params: Params, steps: int) -> dict[str, Any]:
    """Train skada's DANN for about ``steps`` optimizer steps; target test accuracy and the steps taken."""
    from skada.deep import DANN
    from skada.deep.modules import DomainClassifier
    from skorch.callbacks import Callback, LRScheduler

    class CountSteps(Callback):
        count = 0

        def on_batch_end(self, net: Any, batch: Any = None, training: bool = False, **kwargs: Any) -> None:
            self.count += int(training)

    torch.manual_seed(params.train.seed)
    spec = backbone_input(params)
    data = load_train_data(params, with_source=True, spec=spec)
    assert data.source_train is not None
    backbone = load_backbone(params, num_classes=len(data.classes))
    head_classes = backbone.source_classes or data.classes
    model = backbone.model
    model.add_bottleneck(params.train.dann.bottleneck)
    norm = backbone.normalization
    source = data.source_train.images[:]  # uint8: _Classifier augments and normalises
    target = torch.cat([data.unlabeled.images[:], data.train.images[:]])
    mapping = torch.tensor([head_classes.index(c) for c in data.source_classes or head_classes])
    x = torch.cat([source, target])
    y = torch.cat([mapping[data.source_train.labels], torch.full((len(target),), -1)]).numpy()
    sample_domain = np.array([SOURCE] * len(source) + [TARGET] * len(target))
    batch = params.train.batch_size
    per_epoch = max(len(source) // batch, len(target) // batch)  # skada's sampler drops each domain's remainder
    epochs = max(1, -(-steps // per_epoch))
    total = epochs * per_epoch

    classifier = DomainClassifier(num_features=params.train.dann.bottleneck)
    classifier.classifier[-1] = nn.Sigmoid()  # see the module docstring
    counter = CountSteps()
    which = make_strategy(params, Candidate("dann")).augmentation(data.has_colour)  # what our dann's batches get
    peer = _Classifier(model, norm, which, params.train.seed)
    net = DANN(peer, layer_name="model.neck", reg=1.0, domain_classifier=classifier,
               batch_size=batch, max_epochs=epochs, train_split=None, device="cpu", verbose=0,
               optimizer=torch.optim.SGD, lr=params.train.dann.lr, optimizer__momentum=0.9,
               optimizer__weight_decay=params.train.weight_decay,
               callbacks=[counter, LRScheduler(policy=torch.optim.lr_scheduler.LambdaLR, step_every="batch",
                                               lr_lambda=lambda step: (1 + 10 * step / total) ** -0.75)])
    started = time.perf_counter()
    net.fit({"X": x, "sample_domain": sample_domain}, y)
    seconds = time.perf_counter() - started

    manifest = read_manifest(params.reports.dir)
    classes = class_names(manifest, params.data.target)
    test = load_images(domain_rows(manifest, params.data.target, ("test",)), classes, spec.size,
                       interpolation=spec.interpolation)
    peer.eval()
    with torch.no_grad():
        predicted = torch.cat([peer(chunk).argmax(1) for chunk in test.images.chunks(256)])
        fitted = torch.cat([peer(source[i : i + 256]).argmax(1) for i in range(0, len(source), 256)])
    names = np.array(head_classes, dtype=object)[predicted.numpy()]
    truth = np.array(classes, dtype=object)[test.labels.numpy()]
    source_truth = torch.as_tensor(y[: len(source)])
    return {"accuracy": float((names == truth).mean()), "epochs": epochs, "steps": counter.count,
            "source_train_accuracy": float((fitted == source_truth).float().mean()),
            "images": {"source": len(source), "target": len(target)},
            "seconds": round(seconds, 1), "images_per_second": round(2 * batch * counter.count / seconds, 1)}
