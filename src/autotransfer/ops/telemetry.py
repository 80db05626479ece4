"""Environment defaults set on import: telemetry off (no internet here, nobody opted in), artifacts via the server."""

import os

# setdefault: a user who explicitly opts in keeps their choice.
TELEMETRY_OFF = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",  # honoured by MLflow and several other libraries
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
}


# MLflow clients fetch artifacts through the tracking server, not by presigned URLs straight from
# the artifact store: the server holds the store's credentials (the team stack's S3 server checks
# every signature and cannot check presigned ones, ops/s3server.py), and models here are small.
ARTIFACTS_THROUGH_SERVER = {"MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": "false"}


def disable_telemetry() -> None:
    for key, value in {**TELEMETRY_OFF, **ARTIFACTS_THROUGH_SERVER}.items():
        os.environ.setdefault(key, value)
