"""The training engine: one loop for every strategy, with checkpoints, resume and early stopping.

``fit`` trains one candidate (a strategy and its key hyperparameter) for a number of
epochs in ``out/``; read it top to bottom: set up the model and the phases, then per
epoch (re)build the optimizer when a phase starts, run the steps, validate, checkpoint.

Determinism: the data order, the augmentation draws and dropout are seeded from
(seed, epoch), so a run killed after epoch k and started again continues exactly where an
uninterrupted run would be: the checkpoint holds the model, the optimizer's param groups
and state, the scheduler, the phase, the best weights and the history.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from autotransfer.augment import augment
from autotransfer.backbones import TransferModel
from autotransfer.config import Params, TrainConfig
from autotransfer.data import ImageSet, Normalization, class_names, domain_rows, load_images, read_manifest
from autotransfer.distributed import World, all_finite, current_world, main_first, sync_buffers, wrap
from autotransfer.features import FeatureCache, state_hash
from autotransfer.files import write_atomic
from autotransfer.pretrain import DEFAULT_NORMALIZATION, load_backbone
from autotransfer.recipes import Phase, apply_phase, param_groups, phases, set_train_mode
from autotransfer.scoring import evaluate_head
from autotransfer.stages import code_version

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = 3  # bump when the checkpoint's contents change: older ones are not resumed


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, missing inputs); nothing final is written."""


@dataclass(frozen=True)
class Candidate:
    strategy: str
    backbone_lr_mult: float | None = None

    @property
    def label(self) -> str:
        return self.strategy + (f"@{self.backbone_lr_mult:g}x" if self.backbone_lr_mult is not None else "")


@dataclass
class TrainData:
    classes: tuple[str, ...]  # target classes
    train: ImageSet  # labeled target train (after the label cap)
    val: ImageSet  # labeled target val
    unlabeled: ImageSet  # target images without labels (unlabeled/ and capped-away train)
    source_train: ImageSet | None = None  # for dann
    source_classes: tuple[str, ...] | None = None

    @property
    def has_colour(self) -> bool:
        """Whether any image (not just its file mode) has channels that differ."""
        sets = [self.train, self.val, self.unlabeled, self.source_train]
        return any(s is not None and len(s) and bool((s.images[:, 0] != s.images[:, 1]).any()
                                                    or (s.images[:, 1] != s.images[:, 2]).any()) for s in sets)


@dataclass
class FitResult:
    candidate: Candidate
    model: TransferModel
    normalization: Normalization
    head_classes: tuple[str, ...]
    history: list[dict[str, Any]]
    best_epoch: int
    val_accuracy: float | None
    epochs_run: int
    seconds: float
    resumed_from: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- DANN pieces


class GradientReversal(torch.autograd.Function):
    """Identity forward; the gradient is multiplied by −λ on the way back (Ganin & Lempitsky)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, lam: float) -> torch.Tensor:
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.lam * grad, None


def grl(x: torch.Tensor, lam: float) -> torch.Tensor:
    return GradientReversal.apply(x, lam)


def dann_lambda(progress: float) -> float:
    """λ = 2/(1+exp(−10p)) − 1, p the share of all training steps done."""
    return 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0


class DomainClassifier(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(inplace=True), nn.Dropout(0.5),
                                 nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(0.5),
                                 nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


class DannForward(nn.Module):
    """One forward of DANN (features → class logits, and → GRL → domain logits), so DDP can wrap it."""

    def __init__(self, model: TransferModel, domain: DomainClassifier) -> None:
        super().__init__()
        self.model, self.domain = model, domain

    def forward(self, x: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model.features(x)
        return self.model.head(features), self.domain(grl(features, lam))


# ---------------------------------------------------------------- data and model


def load_train_data(params: Params, strategy: str, progress: bool | None = None) -> TrainData:
    manifest = read_manifest(params.reports.dir)
    target, source, size = params.data.target, params.data.source, params.backbone.input_size
    classes = class_names(manifest, target)
    data = TrainData(
        classes=classes,
        train=load_images(domain_rows(manifest, target, ("train",)), classes, size, progress, "target train"),
        val=load_images(domain_rows(manifest, target, ("val",)), classes, size, progress, "target val"),
        unlabeled=load_images(domain_rows(manifest, target, ("unlabeled",)), classes, size, progress,
                              "target unlabeled"),
    )
    if strategy == "dann":
        data.source_classes = class_names(manifest, source)
        data.source_train = load_images(domain_rows(manifest, source, ("train",)), data.source_classes, size,
                                        progress, "source train")
    return data


def build_model(params: Params, candidate: Candidate, data: TrainData) -> tuple[TransferModel, Normalization,
                                                                               tuple[str, ...]]:
    """The model to train and the class names its head predicts."""
    arch, size = params.backbone.arch, params.backbone.input_size
    torch.manual_seed(params.train.seed)
    if candidate.strategy == "scratch":
        return TransferModel(arch, len(data.classes), size), DEFAULT_NORMALIZATION, data.classes
    backbone = load_backbone(params, num_classes=len(data.classes))
    model = backbone.model
    if candidate.strategy in ("source_only", "dann"):
        if backbone.source_classes is None or not set(data.classes) <= set(backbone.source_classes):
            raise TrainingError(f"{candidate.strategy} needs the source model's head over the target's classes "
                                f"(target classes {list(data.classes)}, source head {backbone.source_classes})")
        head_classes = backbone.source_classes
        if candidate.strategy == "dann":
            model.add_bottleneck(params.train.dann.bottleneck)  # a new head over the source classes
        return model, backbone.normalization, head_classes
    model.replace_head(len(data.classes))
    return model, backbone.normalization, data.classes


CROSS_DOMAIN = ("dann", "source_only")


def augmentation_for(cfg: TrainConfig, strategy: str, has_colour: bool) -> tuple[bool, bool]:
    """(geometric, colour) for ``strategy``.

    Colour "auto": on only where colour data meets a strategy that must carry a model
    across domains (DANN: it lifts digits -> digits-m). A strategy that learns from the
    target's own labels is better off seeing its colours as they are: on all of digits-m
    (resnet18, seed 0) colour augmentation held scratch at 0.14 test accuracy and
    finetune_all at 0.55; without it, 0.89 and 0.72.
    """
    aug = cfg.augment_per_strategy.get(strategy, cfg.augment)
    colour = has_colour and strategy in CROSS_DOMAIN if aug.color == "auto" else bool(aug.color)
    return aug.geometric, colour


def resolve_device(choice: str, world: World = World()) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise TrainingError("train.device=cuda but no CUDA device is available")
        return torch.device("cuda", world.rank % torch.cuda.device_count()) if world.distributed else torch.device("cuda")
    return torch.device("cpu")


# ---------------------------------------------------------------- schedule and checkpoints


def schedule(optimizer: torch.optim.Optimizer, total_steps: int, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then cosine (or one-cycle's shape) over ``total_steps``: one per phase."""
    warmup = max(1, int(cfg.warmup * total_steps)) if cfg.warmup > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        if cfg.schedule == "onecycle":
            return max(0.0, 1.0 - progress) ** 2  # one-cycle's annealing half
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_optimizer(groups: list[dict], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups)
    return torch.optim.SGD(groups, momentum=0.9, nesterov=True)


def run_key(params: Params, candidate: Candidate, data: TrainData, epochs: int, init_hash: str) -> str:
    """What makes two runs "the same run": resume only a checkpoint with this key.

    ``init_hash`` is the hash of the weights training starts from: a re-pretrained source
    model with unchanged params must not resume a run that started from the old one. The
    library's code hash is in it too: a finished checkpoint must not stand in for a run
    after the training code changed (the same params could now train another model).
    """
    parts = {"format": CHECKPOINT_FORMAT, "code": code_version(), "candidate": asdict(candidate),
             "train": params.train.model_dump(mode="json"), "epochs": epochs, "init": init_hash,
             "backbone": params.backbone.model_dump(mode="json"), "pretrain": params.pretrain.model_dump(mode="json"),
             "data": [s.content_hash() for s in (data.train, data.val, data.unlabeled) if s is not None]}
    if data.source_train is not None:
        parts["source"] = data.source_train.content_hash()
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def save_atomic(payload: dict[str, Any], path: Path) -> None:
    try:  # the previous checkpoint stays intact until the new one is whole
        write_atomic(path, lambda tmp: torch.save(payload, tmp))
    except OSError as exc:
        raise TrainingError(f"cannot write checkpoint {path}: {exc}") from exc


def changing_state_keys(model: TransferModel, plan: list[Phase]) -> set[str] | None:
    """The state entries training can change: those of the groups trainable in some phase (None: all).

    A group frozen throughout keeps its initial weights and, in eval mode, its BatchNorm
    statistics; the run key pins those initial weights. So checkpoints and the best-epoch
    copy carry only the rest: for a linear probe, the head instead of the whole backbone
    (writing 45 MB of resnet18 per epoch cost more than training the head).
    """
    trainable = set().union(*(phase.trainable for phase in plan))
    groups = model.layer_groups()
    if all(name in trainable for name, _ in groups):
        return None
    ids = {id(t) for name, modules in groups if name in trainable
           for module in modules for t in (*module.parameters(), *module.buffers())}
    return {k for k, v in model.state_dict(keep_vars=True).items() if id(v) in ids}


def state_subset(model: nn.Module, keys: set[str] | None) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if keys is None or k in keys}


def load_subset(model: nn.Module, subset: dict[str, torch.Tensor]) -> None:
    full = model.state_dict()
    full.update(subset)
    model.load_state_dict(full)  # strict: every key is still checked


def load_checkpoint(path: Path, key: str) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or corrupted: start over rather than use it
        log.warning("checkpoint %s is unreadable (%s); starting from scratch", path, exc)
        return None
    if state.get("run_key") != key:
        log.info("checkpoint %s belongs to another run (params or data changed); starting from scratch", path)
        return None
    return state


# ---------------------------------------------------------------- the loop


def fit(params: Params, candidate: Candidate, data: TrainData, out: Path, epochs: int,
        progress: bool | None = None, stop_after: int | None = None) -> FitResult:
    """Train ``candidate`` for ``epochs`` (resuming ``out/checkpoint.pt`` when it is this run's).

    ``stop_after`` ends early but keeps the schedule of the full ``epochs``, so a partial
    run (a race round) is an exact prefix of the full one and the full run resumes it.
    """
    cfg = params.train
    world = current_world()
    device = resolve_device(cfg.device, world)
    model, normalization, head_classes = build_model(params, candidate, data)
    strategy = candidate.strategy
    if candidate.backbone_lr_mult is not None:
        cfg = cfg.model_copy(update={"backbone_lr_mult": candidate.backbone_lr_mult})
    head_lr = cfg.dann.lr if strategy == "dann" else cfg.lr
    use_geometric, use_colour = augmentation_for(cfg, strategy, data.has_colour)
    domain = DomainClassifier(model.bottleneck, cfg.dann.domain_hidden) if strategy == "dann" else None
    plan = phases(strategy, model, cfg, epochs)
    key = run_key(params, candidate, data, epochs, state_hash(model))
    checkpoint_path = out / CHECKPOINT

    # Linear probe: the backbone is frozen, so its features are computed once (cached on
    # disk) and the head trains on them; no backbone forward per epoch.
    probe_features = None
    if strategy == "linear_probe":
        cache = FeatureCache(params.similarity.cache_dir)
        weights = state_hash(model.body)
        with main_first(world):  # rank 0 fills the on-disk cache, the others read it
            probe_features = {name: torch.from_numpy(cache.features(model.body, params.backbone.arch, images,
                                                                    normalization, params.similarity.batch_size,
                                                                    weights, progress))
                              for name, images in (("train", data.train), ("val", data.val))}

    labeled, labels = supervised_pool(strategy, data, head_classes)
    target_pool = torch.cat([data.unlabeled.images, data.train.images]) if strategy == "dann" else None
    if strategy != "source_only" and len(labeled) == 0:
        raise TrainingError(f"{strategy}: no labeled images to train on")
    if target_pool is not None and len(target_pool) == 0:
        raise TrainingError("dann: no target images (unlabeled or train) to adapt on")
    batch = cfg.batch_size
    steps_per_epoch = max(1, math.ceil(len(labeled) / batch)) if strategy != "source_only" else 0

    model.to(device)
    if domain is not None:
        domain.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)

    history: list[dict[str, Any]] = []
    best = {"score": -math.inf, "epoch": 0, "state": None}
    start_epoch = 0
    state = load_checkpoint(checkpoint_path, key)
    optimizer = scheduler = None
    current_phase: Phase | None = None
    changing = changing_state_keys(model, plan)
    if state is not None:
        load_subset(model, state["model"])
        if domain is not None:
            domain.load_state_dict(state["domain"])
        history, start_epoch = list(state["history"]), int(state["epoch"])
        best = {"score": state["best_score"], "epoch": state["best_epoch"], "state": state["best_state"]}
    patience_left = state["patience_left"] if state is not None else cfg.patience
    resumed_from = start_epoch
    started = time.perf_counter()
    total_steps = steps_per_epoch * epochs
    bar = tqdm(total=total_steps, initial=start_epoch * steps_per_epoch, desc=f"train {candidate.label}",
               unit="step", disable=not world.is_main or (None if progress is None else not progress))
    last_epoch = 0 if strategy == "source_only" else min(epochs, stop_after or epochs)
    for epoch in range(start_epoch, last_epoch):
        phase = next(p for p in plan if p.start_epoch <= epoch < p.end_epoch)
        frozen = apply_phase(model, phase)
        if phase != current_phase:  # a new phase: new param groups, a fresh (re-warmed) schedule
            groups = param_groups(strategy, model, phase, cfg, head_lr, [domain] if domain is not None else [])
            optimizer = make_optimizer(groups, cfg)
            # What each step calls: DDP (re-wrapped per phase: the trainable set changed)
            # around the model, its head (linear probe) or model + domain classifier (DANN).
            net = wrap(model.head if probe_features is not None
                       else DannForward(model, domain) if domain is not None else model, world, device)
            scheduler = schedule(optimizer, steps_per_epoch * (phase.end_epoch - phase.start_epoch), cfg)
            if state is not None and state["phase"] == phase.index:
                optimizer.load_state_dict(state["optimizer"])
                scheduler.load_state_dict(state["scheduler"])
            current_phase = phase
        set_train_mode(model, frozen)
        torch.manual_seed(cfg.seed * 1_000_003 + epoch)  # dropout and anything else global
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        # Every rank draws the same order and takes its share of each global batch; its own
        # augmentation draws (one process: the same generator, as always).
        draws = generator if not world.distributed else torch.Generator().manual_seed(
            cfg.seed * 1_000_003 + epoch + 7919 * (world.rank + 1))
        epoch_started = time.perf_counter()
        losses, correct, seen, domain_correct, domain_seen = [], 0, 0, 0, 0
        order = torch.randperm(len(labeled), generator=generator)
        for step in range(steps_per_epoch):
            index = order[step * batch: (step + 1) * batch]
            if len(index) < world.size:  # a last batch too small to give every rank an image
                index = torch.cat([index, order[: world.size - len(index)]])
            index = index[world.rank::world.size]
            y = labels[index].to(device)
            if probe_features is not None:
                logits = net(probe_features["train"][index].to(device))
                loss = F.cross_entropy(logits, y)
            else:
                x = augment(labeled[index], draws, use_geometric, use_colour)
                if strategy == "dann":
                    t_index = torch.randint(len(target_pool), (len(index),), generator=draws)
                    xt = augment(target_pool[t_index], draws, use_geometric, use_colour)
                    both = normalization(torch.cat([x, xt]).to(device))
                    p = (epoch * steps_per_epoch + step) / max(1, total_steps)
                    for group in optimizer.param_groups:  # DANN's annealing: lr·(1+10p)^−0.75
                        group["lr"] = group["initial_lr"] * (1 + 10 * p) ** -0.75
                    with autocast(device):
                        logits_all, d_logits = net(both, dann_lambda(p))
                        logits = logits_all[: len(index)]
                    d_target = torch.cat([torch.zeros(len(index)), torch.ones(len(index))]).to(device)
                    loss = (F.cross_entropy(logits.float(), y)
                            + cfg.dann.domain_weight * F.binary_cross_entropy_with_logits(d_logits.float(), d_target)
                            + cfg.dann.entropy_weight * entropy(logits_all[len(index):].float()))
                    if cfg.dann.mcc_weight > 0:
                        loss = loss + cfg.dann.mcc_weight * class_confusion(logits_all[len(index):].float())
                    if cfg.dann.pseudo_label_weight > 0 and p >= cfg.dann.pseudo_label_from:
                        plain = normalization(target_pool[t_index].to(device))
                        loss = loss + cfg.dann.pseudo_label_weight * consistency(
                            model, plain, logits_all[len(index):].float(), cfg.dann.pseudo_label_threshold, frozen)
                    domain_correct += int(((d_logits > 0).float() == d_target).sum())
                    domain_seen += len(d_target)
                else:
                    with autocast(device):
                        logits = net(normalization(x.to(device)))
                    loss = F.cross_entropy(logits.float(), y)
            if not all_finite(loss.detach(), world):
                raise TrainingError(f"{candidate.label}: non-finite loss ({loss.item()}) at epoch {epoch + 1}, "
                                    f"step {step + 1}; stopped, no model written")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if strategy != "dann":
                scheduler.step()
            losses.append(loss.item())
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            bar.update(1)
        seconds = time.perf_counter() - epoch_started
        sync_buffers(model, world)
        val_accuracy = evaluate_head(model, data.val, normalization, head_classes, data.classes, device,
                                     probe_features["val"] if probe_features is not None else None)
        record = {"epoch": epoch + 1, "phase": phase.index, "train_loss": float(np.mean(losses)),
                  "train_accuracy": correct / max(1, seen), "val_accuracy": val_accuracy,
                  "lr": max(g["lr"] for g in optimizer.param_groups), "seconds": round(seconds, 3),
                  "images_per_second": round(seen * world.size / max(seconds, 1e-9), 1)}
        if strategy == "dann":
            record["domain_accuracy"] = domain_correct / max(1, domain_seen)
            record["lambda"] = dann_lambda((epoch + 1) / epochs)
        history.append(record)
        bar.set_postfix(loss=f"{record['train_loss']:.3f}",
                        val="n/a" if val_accuracy is None else f"{val_accuracy:.3f}")
        # Model selection: the best labeled-val epoch when there is a labeled val split;
        # otherwise (DANN without target labels) the last epoch: no label-free rule beat it here.
        score = val_accuracy if val_accuracy is not None else epoch
        if score > best["score"]:
            best = {"score": score, "epoch": epoch + 1, "state": state_subset(model, changing)}
            patience_left = cfg.patience
        else:
            patience_left -= 1
        stop = cfg.patience > 0 and patience_left <= 0
        if world.is_main:  # the ranks' weights are equal; one writer
            save_atomic({"run_key": key, "epoch": epoch + 1 if not stop else epochs, "phase": phase.index,
                         "model": state_subset(model, changing), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "domain": domain.state_dict() if domain else {},
                         "history": history, "best_score": best["score"], "best_epoch": best["epoch"],
                         "patience_left": patience_left,
                         "best_state": best["state"]}, checkpoint_path)
        if stop:
            log.info("early stopping after epoch %d (best %d)", epoch + 1, best["epoch"])
            break
    bar.close()
    if best["state"] is not None:
        load_subset(model, best["state"])
    model.cpu()
    val_accuracy = evaluate_head(model, data.val, normalization, head_classes, data.classes, torch.device("cpu"),
                                 probe_features["val"] if probe_features is not None else None)
    return FitResult(candidate, model, normalization, head_classes, history, best["epoch"], val_accuracy,
                     len(history), time.perf_counter() - started, resumed_from)


def supervised_pool(strategy: str, data: TrainData, head_classes: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """The labeled images a strategy learns from, with labels indexing ``head_classes``."""
    if strategy != "dann":
        return data.train.images, data.train.labels
    # DANN: labeled source, plus the labeled target images when there are any, in the
    # source head's class space.
    assert data.source_train is not None
    mapping = torch.tensor([head_classes.index(c) for c in data.classes], dtype=torch.long)
    target_labels = mapping[data.train.labels] if len(data.train) else data.train.labels
    return (torch.cat([data.source_train.images, data.train.images]),
            torch.cat([data.source_train.labels, target_labels]))


def consistency(model: TransferModel, plain: torch.Tensor, augmented_logits: torch.Tensor, threshold: float,
                frozen: list[nn.Module]) -> torch.Tensor:
    """Cross-entropy of the augmented view against the confident predictions on the plain images.

    The pseudo-labels come from the current model under the target batch's own BatchNorm
    statistics (AdaBN-style; the running statistics mix both domains, and eval-mode labels
    from them were wrong often enough to cost 8 points on synth-digits -> digits), with no
    gradient, dropout off and the running statistics left untouched.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    if len(plain) < 2:  # one image has no batch statistics: fall back to the running ones
        for module in norms:
            module.eval()
        norms = []
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in norms]
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.eval()
    for module in norms:
        module.momentum = 0.0  # batch statistics for the forward, running ones unchanged
    try:
        with torch.no_grad(), autocast(plain.device):
            probabilities = model(plain).float().softmax(1)
    finally:
        for module, (momentum, tracked) in zip(norms, saved):
            module.momentum = momentum
            if tracked is not None:
                module.num_batches_tracked.copy_(tracked)
        set_train_mode(model, frozen)
    confidence, pseudo = probabilities.max(1)
    mask = (confidence >= threshold).float()
    return (F.cross_entropy(augmented_logits, pseudo, reduction="none") * mask).mean()


def class_confusion(logits: torch.Tensor, temperature: float = 2.5) -> torch.Tensor:
    """Minimum Class Confusion (Jin et al., ECCV 2020) on a batch of target predictions.

    The between-class share of the batch's class-correlation matrix, rows normalised, with
    confident (low-entropy) images weighted up; 0 when no image is shared between classes.
    The temperature is the paper's default.
    """
    if logits.shape[0] == 0:
        return logits.sum()
    p = (logits / temperature).softmax(1)
    certainty = 1 + torch.exp(-(-(p * p.clamp_min(1e-12).log()).sum(1)))
    weights = (len(p) * certainty / certainty.sum()).detach().unsqueeze(1)
    correlation = (p * weights).T @ p
    correlation = correlation / correlation.sum(1, keepdim=True).clamp_min(1e-12)
    return (correlation.sum() - correlation.trace()) / p.shape[1]


def entropy(logits: torch.Tensor) -> torch.Tensor:
    if logits.numel() == 0:
        return logits.sum()
    p = logits.softmax(1)
    return -(p * logits.log_softmax(1)).sum(1).mean()


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA, nothing on the CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
