"""The connection to MLflow: the store's URI, its lock, retries and timeouts, and small registry helpers.

``registry`` is the one package that imports mlflow: ``store`` (this module) connects,
``register`` logs and registers a run and decides on the champion, ``people`` is what a
person does by hand (promote, roll back), ``pyfunc`` is the served model.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from autotransfer import uninterrupted
from autotransfer.config import RegistryConfig
from autotransfer.errors import RegistryError

# MLflow's INFO chatter ("Started monitoring system metrics" and "Stopping ..." for every stage
# command, dataset-source guesses) and its warnings stay out of the terminal: what they are
# about is recorded in MLflow itself, and each stage prints what it did.
logging.getLogger("mlflow").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", module=r"mlflow(\.|$)")


@contextmanager
def mlflow_prints_nothing() -> Iterator[None]:
    """``mlflow.register_model`` prints "Successfully registered model" to its own stderr stream, not a
    logger; the register stage says it in its own line."""
    from mlflow.utils.logging_utils import MLFLOW_LOGGING_STREAM as stream

    enabled, stream.enabled = stream.enabled, False
    try:
        yield
    finally:
        stream.enabled = enabled


DEFAULT_TRACKING_URI = "sqlite:///mlflow/mlflow.db"
CHAMPION, CHALLENGER = "champion", "challenger"


# --------------------------------------------------------------------------- connection


def without_secret(uri: str) -> str:
    """``uri`` as the product writes or prints it: a password in its user part becomes ``***``.

    ``https://user:token@mlflow.example`` is a valid tracking URI; its token must not end up
    in registration.json, tracking.json, MLflow params, console output or error messages.
    """
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def scrubbed(text: str, uri: str) -> str:
    """``text`` (an error from MLflow or requests may quote the URI) with ``uri``'s password as ``***``."""
    password = urlsplit(uri).password
    return text.replace(password, "***") if password else text


def tracking_uri(config: RegistryConfig) -> str:
    return config.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


@contextmanager
def connect(config: RegistryConfig, exclusive: bool = True) -> Iterator[tuple[str, MlflowClient]]:
    """A client on the configured store; MLflow errors come out as RegistryError naming the URI.

    ``exclusive`` holds the store's lock for the whole block: registrations read the
    champion, score and move it, and must not interleave. The lock is taken before the
    client touches the store, because two processes creating a fresh SQLite schema at
    once collide ("duplicate column name").
    """
    uri = tracking_uri(config)
    database = _sqlite_path(uri)
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)
    elif uri.startswith(("http://", "https://")):
        _check_reachable(uri, config)
    with mlflow_environment(uri, config), registry_lock(uri) if exclusive or database is not None else nullcontext():
        try:
            yield uri, MlflowClient(tracking_uri=uri, registry_uri=uri)
        except MlflowException as exc:
            raise RegistryError(scrubbed(f"MLflow at {uri}: {exc.message}", uri)) from exc
        except OSError as exc:  # requests' ConnectionError is an OSError
            raise RegistryError(scrubbed(f"MLflow at {uri}: {type(exc).__name__}: {exc}", uri)) from exc


@contextmanager
def mlflow_environment(uri: str, config: RegistryConfig) -> Iterator[None]:
    """MLflow reads these from the environment (and ``set_tracking_uri`` writes one there).

    Restored afterwards: otherwise this store's URI would outlive the call, be taken for
    the user's $MLFLOW_TRACKING_URI by the next ``tracking_uri()`` and be inherited by every
    subprocess (a `dvc repro` after a flow that used another store registered there).
    """
    settings = {
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(config.request_retries),
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(math.ceil(config.request_timeout)),  # MLflow reads whole seconds
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"),
        # Not MLflow's "View run … at: <uri>" line on stdout: it prints the URI with its password;
        # register and `autotransfer summary` print the links themselves, masked.
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    }
    before = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    mlflow.set_tracking_uri(uri)
    try:
        # every MLflow call runs whole: one cut by a stop signal would leave SQLite's lock held, and the
        # write that ends the run KILLED would wait on it (autotransfer/uninterrupted.py)
        with uninterrupted.whole():
            yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _check_reachable(uri: str, config: RegistryConfig) -> None:
    import requests

    error: Exception | None = None
    for attempt in range(config.request_retries + 1):
        try:
            requests.get(uri.rstrip("/") + "/health", timeout=min(5.0, config.request_timeout)).raise_for_status()
            return
        except requests.RequestException as exc:
            error = exc
            time.sleep(min(2.0**attempt, 5.0) if attempt < config.request_retries else 0)
    raise RegistryError(
        scrubbed(
            f"MLflow tracking server {uri} is unreachable ({type(error).__name__}: {error}); "
            "the trained model stays in place: rerun `autotransfer register` once the server is up",
            uri,
        )
    )


@contextmanager
def registry_lock(uri: str, timeout: float = 900) -> Iterator[None]:
    """Serialise registrations on one store (a SQLite file, or a server as seen from this machine)."""
    from filelock import FileLock, Timeout

    database = _sqlite_path(uri)
    if database is not None:
        lock_path = database.with_name(database.name + ".lock")
    else:
        lock_path = (
            Path(tempfile.gettempdir()) / f"autotransfer-registry-{hashlib.sha256(uri.encode()).hexdigest()[:16]}.lock"
        )
    try:
        with FileLock(str(lock_path), timeout=timeout):
            yield
    except Timeout:
        raise RegistryError(
            f"MLflow at {without_secret(uri)}: another registration held {lock_path} for {timeout:.0f} s"
        ) from None


def ensure_experiment(client: MlflowClient, uri: str, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    database = _sqlite_path(uri)
    # With the embedded store the artifacts go next to the database (mlflow/artifacts), not into ./mlruns.
    location = (database.parent / "artifacts").resolve().as_uri() if database is not None else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # created meanwhile by another process
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


# --------------------------------------------------------------------------- helpers


def alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    if not registered_model_exists(client, name):
        return None
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def registered_model_exists(client: MlflowClient, name: str) -> bool:
    try:
        client.get_registered_model(name)
        return True
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise


def set_version_tags(client: MlflowClient, name: str, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))


def quote_name(name: str) -> str:
    return name.replace("'", "\\'")


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
