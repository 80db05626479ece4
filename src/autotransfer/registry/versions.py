"""Which registered version is which: by its weights, by its target and classes, by its data and params."""

from __future__ import annotations

import hashlib
import json

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from autotransfer.config import Params, model_params_hash, registered_model_name
from autotransfer.registry.store import (
    CHAMPION,
    alias_version,
    connect,
    quote_name,
    registered_model_exists,
)

CLASSES_TAG_CHARS = 500


def class_set_tag(classes: tuple[str, ...]) -> str:
    """The classes a version predicts, as a version tag: the sorted names, or their hash when long."""
    listed = json.dumps(sorted(classes), ensure_ascii=False)
    if len(listed) <= CLASSES_TAG_CHARS:
        return listed
    return f"{len(classes)} classes, sha256 " + hashlib.sha256(listed.encode()).hexdigest()


def other_target(champion: ModelVersion, target: str, classes: tuple[str, ...]) -> str | None:
    """Why ``champion`` belongs to another target than this run's, or None when it is this run's.

    A version names its target in its ``target`` tag (every version ever registered has one)
    and, since champions are per target, its class set in ``classes``; a version registered
    before has no ``classes`` tag and is compared by target alone. A target whose classes
    changed is still that target (a champion that lacks a new class scores lower on the new
    test split, fairly); one that shares no class with the champion is not.
    """
    theirs = champion.tags.get("target")
    if theirs is not None and theirs != target:
        return f"is a model of target {theirs!r}, not of {target!r}"
    try:
        tagged = json.loads(champion.tags.get("classes", "null"))
    except ValueError:
        tagged = None  # a hashed (long) class set: compared by target alone
    if isinstance(tagged, list) and not set(tagged) & set(classes):
        return f"predicts none of target {target!r}'s classes (it predicts {', '.join(map(str, tagged[:10]))}…)"
    return None


def find_version(client: MlflowClient, name: str, model_hash: str) -> ModelVersion | None:
    """The version already registered with these exact weights, if any."""
    if not registered_model_exists(client, name):
        return None
    for version in client.search_model_versions(f"name = '{quote_name(name)}'"):
        if version.tags.get("model_sha256") == model_hash:
            return version
    return None


def already_trained(params: Params, data: str) -> dict[str, str] | None:
    """The registered version trained on exactly this data with these model params, if any.

    What a scheduled run checks before retraining: the same inputs were already trained,
    scored and decided on (promoted or kept), so doing it again would change nothing.
    """
    name = registered_model_name(params)
    wanted = model_params_hash(params)
    with connect(params.registry, exclusive=False) as (_, client):
        if not registered_model_exists(client, name):
            return None
        champion = alias_version(client, name, CHAMPION)
        matches = [
            v
            for v in client.search_model_versions(f"name = '{quote_name(name)}'")
            # decided: a version registered before its decision was made (an older register
            # wrote these tags first) is not "already trained", so the next run decides on it
            if v.tags.get("data_hash") == data and v.tags.get("params_hash") == wanted and v.tags.get("decision")
        ]
        if not matches:
            return None
        best = max(matches, key=lambda v: int(v.version))
        return {
            "version": str(best.version),
            "decision": best.tags.get("decision", ""),
            "champion": str(champion.version) if champion is not None else "",
        }
