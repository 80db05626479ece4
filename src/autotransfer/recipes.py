"""What each strategy trains, and at which learning rate (DESIGN.md §7).

A recipe turns a strategy (+ its phase, for progressive unfreezing) into optimizer param
groups over the model's layer groups. The pitfalls users report against fastai,
Lightning and TLlib are handled here, in one place:
- frozen parameters have ``requires_grad=False`` and are in no param group, so neither the
  optimizer nor weight decay can move them;
- frozen layer groups run in eval mode, so BatchNorm keeps its running statistics;
- biases and norm parameters get no weight decay;
- a group unfrozen late gets its own param group and a fresh schedule (see training.py),
  never an LR already decayed by an earlier phase.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from autotransfer.backbones import TransferModel
from autotransfer.config import TrainConfig
from autotransfer.optim import weight_decay_groups


@dataclass(frozen=True)
class Phase:
    index: int
    start_epoch: int
    end_epoch: int  # exclusive
    trainable: tuple[str, ...]  # layer-group names that train in this phase


def phases(strategy: str, model: TransferModel, cfg: TrainConfig, epochs: int) -> list[Phase]:
    body = [name for name, _ in model.layer_groups()[:-1]]
    if strategy in ("finetune_all", "scratch", "dann"):
        return [Phase(0, 0, epochs, (*body, "head"))]
    if strategy == "finetune_top":
        return [Phase(0, 0, epochs, (*body[-cfg.top_groups:], "head"))]
    if strategy in ("linear_probe", "source_only"):
        return [Phase(0, 0, epochs, ("head",))]
    if strategy == "progressive":
        # Head first, then one more group (from the top down) per phase; the last phase
        # runs to the end of the budget.
        out, start, k = [], 0, 0
        while start < epochs:
            last = k >= len(body)
            end = epochs if last else min(epochs, start + cfg.phase_epochs)
            out.append(Phase(k, start, end, (*body[len(body) - k:], "head")))
            start, k = end, k + 1
        return out
    raise ValueError(f"unknown strategy {strategy!r}")


def apply_phase(model: TransferModel, phase: Phase) -> list[nn.Module]:
    """Set requires_grad per group; return the frozen modules (to be kept in eval mode)."""
    frozen = []
    for name, modules in model.layer_groups():
        trainable = name in phase.trainable
        for module in modules:
            for param in module.parameters():
                param.requires_grad_(trainable)
            if not trainable:
                frozen.append(module)
    return frozen


def set_train_mode(model: nn.Module, frozen: list[nn.Module]) -> None:
    model.train()
    for module in frozen:
        module.eval()  # frozen BatchNorm keeps its running statistics


def param_groups(strategy: str, model: TransferModel, phase: Phase, cfg: TrainConfig,
                 head_lr: float, extra: list[nn.Module] = ()) -> list[dict]:
    """Param groups for ``phase``: one per trainable layer group, each with its LR and a name.

    - scratch: every group at ``head_lr``;
    - finetune_all / finetune_top / dann: discriminative LRs, the top body group at
      ``head_lr × backbone_lr_mult``, each group below × ``layer_decay`` (dann: ``dann.layer_decay``);
    - progressive: the k-th unfrozen group (counted from the top) at ``head_lr / lr_ratio^k``
      (ULMFiT's 2.6).
    ``extra`` modules (e.g. DANN's domain classifier) train at ``head_lr``.
    """
    groups = [(name, modules) for name, modules in model.layer_groups() if name in phase.trainable]
    body = [g for g in groups if g[0] != "head"]
    out: list[dict] = []
    for depth, (name, modules) in enumerate(reversed(body)):  # depth 0: the top body group
        if strategy == "scratch":
            lr = head_lr
        elif strategy == "progressive":
            lr = head_lr / cfg.lr_ratio ** (depth + 1)
        else:
            decay = cfg.dann.layer_decay if strategy == "dann" else cfg.layer_decay
            lr = head_lr * cfg.backbone_lr_mult * decay**depth
        out += _named(weight_decay_groups(modules, cfg.weight_decay, lr=lr), name)
    head = [m for name, modules in groups if name == "head" for m in modules] + list(extra)
    out += _named(weight_decay_groups(head, cfg.weight_decay, lr=head_lr), "head")
    return out


def _named(groups: list[dict], name: str) -> list[dict]:
    for group in groups:
        group["name"] = f"{name}{'' if group['weight_decay'] else '/no_decay'}"
    return groups
