"""A registered version's files, checked before anything in them is loaded or run.

A version is stored as code (``image_classifier.py`` and the package it carries) plus its
weights: loading it runs that code. Whoever can write the artifact store could replace
either. At registration the sha256 of every file of the logged model, as read back from the
store, is recorded in the version's ``files_sha256`` tag (the registry's database, not the
artifact store). Before ``autotransfer predict`` or the champion re-score loads a version,
its files are downloaded once, hashed and compared: a mismatch refuses the version, naming
the files that differ, and nothing of it is loaded; a match is loaded from that same copy.

``mlflow models serve`` loads a version by itself, before any of our code: check it first
with ``autotransfer verify models:/NAME@champion`` (the same check), or serve a copy that was.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from autotransfer.errors import RegistryError
from autotransfer.io.images import sha256_file

log = logging.getLogger(__name__)

FILES_TAG = "files_sha256"
MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))/?$")


# Written by MLflow's client into each download (the name and the version or alias asked for),
# not stored with the model.
CLIENT_WRITTEN = "registered_model_meta"


def file_hashes(folder: Path) -> dict[str, str]:
    """Every stored file below ``folder`` by relative path -> its sha256."""
    return {
        path.relative_to(folder).as_posix(): sha256_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts and path.relative_to(folder).as_posix() != CLIENT_WRITTEN
    }


def digest(hashes: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()


def version_of(client: MlflowClient, model_uri: str) -> ModelVersion | None:
    """The registered version ``models:/NAME@ALIAS`` or ``models:/NAME/N`` names (None for other URIs)."""
    match = MODEL_URI.match(model_uri)
    if match is None:
        return None
    if match["alias"]:
        return client.get_model_version_by_alias(match["name"], match["alias"])
    return client.get_model_version(match["name"], match["version"])


def record(client: MlflowClient, name: str, number: str, model_uri: str, scratch: Path) -> str:
    """Download the logged model as the store holds it and tag the version with its files' hashes."""
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(scratch)))
    recorded = digest(file_hashes(local))
    client.set_model_version_tag(name, number, FILES_TAG, recorded)
    return recorded


def verified_copy(client: MlflowClient, model_uri: str, scratch: Path) -> Path:
    """A local copy of ``model_uri``'s files, checked against the hashes recorded at registration.

    Raises ``RegistryError`` when a file differs (nothing of the version is loaded); a version
    registered before hashes were recorded is loaded with a warning.
    """
    import mlflow

    version = version_of(client, model_uri)
    local = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(scratch)))
    if version is None:
        log.warning("%s: not a registered version (models:/NAME@ALIAS or /N): its files are not checked", model_uri)
        return local
    expected = version.tags.get(FILES_TAG)
    if expected is None:
        log.warning(
            "%s (version %s) was registered before file hashes were recorded: its files are not checked",
            model_uri,
            version.version,
        )
        return local
    found = digest(file_hashes(local))
    if found != expected:
        raise RegistryError(
            f"{model_uri} (version {version.version}): its stored files are not the ones registered "
            f"(sha256 {found[:12]}…, registered {expected[:12]}…): someone changed the artifact store; "
            "refused, nothing of it was loaded or run"
        )
    return local
