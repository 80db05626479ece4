"""What a person does by hand: make a version the champion, or give the champion back."""

from __future__ import annotations

from typing import Any

from autotransfer.config import Params, registered_model_name
from autotransfer.errors import RegistryError
from autotransfer.registry.store import CHAMPION, alias_version, connect, set_version_tags, utc_now, without_secret

# --------------------------------------------------------------------------- people: promote, rollback


def promote(params: Params, version: str) -> dict[str, Any]:
    """Make ``version`` the champion by hand; the current one is recorded for rollback."""
    name = registered_model_name(params)
    with connect(params.registry) as (uri, client):
        number = str(client.get_model_version(name, str(version)).version)
        champion = alias_version(client, name, CHAMPION)
        before = str(champion.version) if champion is not None else None
        if before == number:
            return _people_report(uri, name, number, before, "already the champion")
        reason = f"promoted by hand (was v{before})" if before else "promoted by hand (no champion)"
        set_version_tags(
            client,
            name,
            number,
            {"decision": "promoted", "reason": reason, "decided_at": utc_now(), "previous_champion": before or ""},
        )
        client.set_registered_model_alias(name, CHAMPION, number)
    return _people_report(uri, name, number, before, reason)


def rollback(params: Params) -> dict[str, Any]:
    """Give ``champion`` back to the version it replaced (its ``previous_champion`` tag)."""
    name = registered_model_name(params)
    with connect(params.registry) as (uri, client):
        champion = alias_version(client, name, CHAMPION)
        if champion is None:
            raise RegistryError(f"MLflow at {without_secret(uri)}: {name!r} has no champion to roll back")
        previous = champion.tags.get("previous_champion", "")
        if not previous:
            raise RegistryError(
                f"MLflow at {without_secret(uri)}: champion v{champion.version} of {name!r} replaced "
                "no earlier champion; nothing to roll back to"
            )
        client.get_model_version(name, previous)  # still there?
        current = str(champion.version)
        set_version_tags(client, name, current, {"rolled_back_at": utc_now(), "rolled_back_to": previous})
        set_version_tags(client, name, previous, {"restored_at": utc_now(), "restored_from": current})
        client.set_registered_model_alias(name, CHAMPION, previous)
    return _people_report(uri, name, previous, current, f"rolled back from v{current}")


def _people_report(uri: str, name: str, champion: str, before: str | None, reason: str) -> dict[str, Any]:
    return {
        "tracking_uri": without_secret(uri),
        "model_name": name,
        "champion": champion,
        "champion_before": before,
        "reason": reason,
    }
