"""Champion/challenger: when does a new model take over? Pure logic, no MLflow."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide(
    metric: str, challenger: float, champion: float | None, champion_version: str | None, min_delta: float
) -> Decision:
    """Promote the challenger when there is no champion, or when it wins by at least ``min_delta``.

    Both scores must come from the same test split: the champion is re-scored on today's
    data, never compared through the number it was registered with.
    """
    if champion_version is None or champion is None:
        return Decision(True, f"first model: no champion yet, so it becomes champion ({metric} {challenger:.4f})")
    gain = challenger - champion
    if gain >= min_delta - 1e-12:
        return Decision(
            True,
            f"{metric} {challenger:.4f} beats champion v{champion_version}'s {champion:.4f} "
            f"on the same test split by {gain:+.4f} (min_delta {min_delta})",
        )
    return Decision(
        False,
        f"{metric} {challenger:.4f} vs champion v{champion_version}'s {champion:.4f} on the "
        f"same test split: {gain:+.4f} is less than min_delta {min_delta}; champion kept",
    )


def health_veto(collapsed: bool | None, gates_promotion: bool, verdict: str) -> str | None:
    """Why a model that would win may not be promoted: with no labeled target val, the label-free
    checks are all that vouch for it, and a collapsed model (nearly all its target predictions in
    one or two classes) is no better than chance whatever its test score on a few labels."""
    if gates_promotion and collapsed:
        return f"not promoted: with no labeled target val to check it, the model is {verdict}; champion kept"
    return None
