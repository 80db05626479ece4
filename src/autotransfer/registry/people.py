"""What a person does by hand: make a version the champion, or give the champion back."""

from __future__ import annotations

from typing import Any

from autotransfer.config import Params, RegistryConfig
from autotransfer.errors import RegistryError
from autotransfer.registry.store import CHAMPION, alias_version, connect, set_version_tags, utc_now

# --------------------------------------------------------------------------- people: promote, rollback


def promote(params: Params, version: str) -> dict[str, Any]:
    """Make ``version`` the champion by hand; the current one is recorded for rollback."""
    config = params.registry
    with connect(config) as (uri, client):
        number = str(client.get_model_version(config.model_name, str(version)).version)
        champion = alias_version(client, config.model_name, CHAMPION)
        before = str(champion.version) if champion is not None else None
        if before == number:
            return _people_report(uri, config, number, before, "already the champion")
        reason = f"promoted by hand (was v{before})" if before else "promoted by hand (no champion)"
        set_version_tags(
            client,
            config.model_name,
            number,
            {"decision": "promoted", "reason": reason, "decided_at": utc_now(), "previous_champion": before or ""},
        )
        client.set_registered_model_alias(config.model_name, CHAMPION, number)
    return _people_report(uri, config, number, before, reason)


def rollback(params: Params) -> dict[str, Any]:
    """Give ``champion`` back to the version it replaced (its ``previous_champion`` tag)."""
    config = params.registry
    with connect(config) as (uri, client):
        champion = alias_version(client, config.model_name, CHAMPION)
        if champion is None:
            raise RegistryError(f"MLflow at {uri}: {config.model_name!r} has no champion to roll back")
        previous = champion.tags.get("previous_champion", "")
        if not previous:
            raise RegistryError(
                f"MLflow at {uri}: champion v{champion.version} of {config.model_name!r} replaced "
                "no earlier champion; nothing to roll back to"
            )
        client.get_model_version(config.model_name, previous)  # still there?
        current = str(champion.version)
        set_version_tags(client, config.model_name, current, {"rolled_back_at": utc_now(), "rolled_back_to": previous})
        set_version_tags(client, config.model_name, previous, {"restored_at": utc_now(), "restored_from": current})
        client.set_registered_model_alias(config.model_name, CHAMPION, previous)
    return _people_report(uri, config, previous, current, f"rolled back from v{current}")


def _people_report(uri: str, config: RegistryConfig, champion: str, before: str | None, reason: str) -> dict[str, Any]:
    return {
        "tracking_uri": uri,
        "model_name": config.model_name,
        "champion": champion,
        "champion_before": before,
        "reason": reason,
    }
