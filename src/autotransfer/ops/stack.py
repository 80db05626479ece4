"""A team-scale stack on loopback: PostgreSQL, an S3 server, MLflow and Prefect servers, a worker.

    autotransfer stack up       # or `make stack-up`; prints what runs where
    source .stack/env           # MLFLOW_TRACKING_URI and PREFECT_API_URL for this shell
    autotransfer stack down     # or `make stack-down`

The same engines a team runs on real hosts (README "Running as a team"), started here as
throwaway processes bound to 127.0.0.1, with their state under ``.stack/`` (git-ignored):
- PostgreSQL (Debian's postgresql; a cluster made with initdb): databases ``mlflow`` and ``prefect``;
- an S3 API (moto's server mode behind ops/s3server.py: signatures checked against the one key its
  IAM created at start, moto's open control API refused) with buckets for MLflow artifacts and the DVC remote;
- ``mlflow server``: backend store on PostgreSQL, artifacts proxied to S3 (``--serve-artifacts``),
  so clients never hold S3 credentials;
- ``prefect server`` on PostgreSQL, the ``autotransfer-process`` pool and a ``prefect worker``;
- the DVC remote ``team`` (``s3://…``) in ``.dvc/config.local``: endpoint and keys stay out of git.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

from autotransfer.ops.processes import (
    HOST,
    StackError,
    init_cluster,
    postgres_bin,
    terminate_group,
    wait_gone,
    wait_http,
    write_private,
)
from autotransfer.ops.telemetry import ARTIFACTS_THROUGH_SERVER

MLFLOW_BUCKET = "autotransfer-mlflow"
DVC_BUCKET = "autotransfer-dvc"
DVC_REMOTE = "team"
POOL = "autotransfer-process"  # flows.deploy.POOL (a test keeps them equal)
DEFAULT_PORTS = {"postgres": 54329, "s3": 9329, "mlflow": 5329, "prefect": 4329}


@dataclass
class Stack:
    """Where the stack lives and on which ports; ``state.json`` records what ``up`` started."""

    root: Path
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    # The S3 key: created by the S3 server's own IAM when it starts (start_s3), the only key it accepts.
    access_key: str = ""
    secret_key: str = ""
    # PostgreSQL's superuser password (scram-sha-256): kept in state.json (0600), given to the
    # servers that use the database as PGPASSWORD, never in a URL, a command line or a log.
    db_password: str = field(default_factory=lambda: secrets.token_hex(16))
    # The Prefect server's basic-auth "user:password": without it nobody can create flow runs (runs
    # with any params file and output paths), read or cancel them. In state.json and env (0600).
    prefect_auth: str = field(default_factory=lambda: f"autotransfer:{secrets.token_hex(16)}")
    pids: dict[str, int] = field(default_factory=dict)

    # ---------------------------------------------------------------- addresses
    @property
    def postgres_url(self) -> str:
        return f"postgresql://postgres@{HOST}:{self.ports['postgres']}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://{HOST}:{self.ports['s3']}"

    @property
    def mlflow_uri(self) -> str:
        return f"http://{HOST}:{self.ports['mlflow']}"

    @property
    def prefect_api(self) -> str:
        return f"http://{HOST}:{self.ports['prefect']}/api"

    @property
    def s3_env(self) -> dict[str, str]:
        """Only the servers that talk to S3 get these (MLflow server, DVC); clients never do."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint,
        }

    @property
    def database_env(self) -> dict[str, str]:
        """Only the processes that open the database get this (libpq and asyncpg read it)."""
        return {"PGPASSWORD": self.db_password}

    @property
    def client_env(self) -> dict[str, str]:
        return {
            "MLFLOW_TRACKING_URI": self.mlflow_uri,
            "PREFECT_API_URL": self.prefect_api,
            "PREFECT_API_AUTH_STRING": self.prefect_auth,
            # the mlflow CLI in that shell too fetches artifacts through the server (ops/telemetry.py says why)
            **ARTIFACTS_THROUGH_SERVER,
        }

    # ---------------------------------------------------------------- state
    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    def save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        data = {**asdict(self), "root": str(self.root)}
        # Created 0600, never readable by others even for a moment: it holds the S3 secret and the
        # database password.
        write_private(self.state_file, json.dumps(data, indent=2) + "\n")
        exports = "".join(f"export {k}={v}\n" for k, v in self.client_env.items())
        write_private(self.root / "env", exports)  # 0600 too: it holds the Prefect API's password

    @classmethod
    def load(cls, root: Path) -> Stack:
        data = json.loads((root / "state.json").read_text())
        return cls(**{**data, "root": Path(data["root"])})

    # ---------------------------------------------------------------- processes
    def _log(self, name: str) -> IO[bytes]:
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        return open(self.root / "logs" / f"{name}.log", "ab")

    def _spawn(self, name: str, command: list[str], env: dict[str, str], health: str, timeout: float = 120) -> None:
        with self._log(name) as log:
            process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.root
            )
        self.pids[name] = process.pid
        self.save()
        wait_http(health, process, timeout, f"{name} (see {self.root}/logs/{name}.log)")

    def _base_env(self) -> dict[str, str]:
        inherited = ("AWS_", "MLFLOW_", "PREFECT_API", "PGPASSWORD")  # each server gets only its own
        env = {k: v for k, v in os.environ.items() if not k.startswith(inherited)}
        env.update(
            {
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "MLFLOW_DISABLE_TELEMETRY": "true",
                "DO_NOT_TRACK": "1",
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            }
        )
        return env

    def start_postgres(self) -> None:
        data = self.root / "postgres"
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # initdb refuses root
        if not (data / "PG_VERSION").exists():
            init_cluster(data, self.db_password, self.root / "postgres.password", as_postgres)
        options = f"-p {self.ports['postgres']} -k {data} -c listen_addresses={HOST}"
        result = subprocess.run(
            [
                *as_postgres,
                str(postgres_bin("pg_ctl")),
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(data / "server.log"),
                "-w",
                "-t",
                "60",
                "start",
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise StackError(
                f"PostgreSQL did not start: {result.stderr.strip() or result.stdout.strip()} "
                f"(log: {data / 'server.log'})"
            )
        self.pids["postgres"] = int((data / "postmaster.pid").read_text().split()[0])
        self.save()
        for database in ("mlflow", "prefect"):
            created = subprocess.run(
                [
                    str(postgres_bin("createdb")),
                    "-h",
                    HOST,
                    "-p",
                    str(self.ports["postgres"]),
                    "-U",
                    "postgres",
                    database,
                ],
                capture_output=True,
                text=True,
                env={**os.environ, **self.database_env},
            )
            if created.returncode != 0 and "already exists" not in created.stderr:
                raise StackError(f"createdb {database}: {created.stderr.strip()}")

    def start_s3(self) -> None:
        """moto's S3 behind credentials (ops/s3server.py): its first actions create the one key it accepts."""
        from autotransfer.ops.s3server import HEALTH, SETUP_ACTIONS

        self._spawn(
            "s3",
            [sys.executable, "-m", "autotransfer.ops.s3server", HOST, str(self.ports["s3"])],
            {**self._base_env(), "INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_ACTIONS)},
            f"{self.s3_endpoint}{HEALTH}",
        )
        import boto3
        from botocore.exceptions import ClientError

        # The SETUP_ACTIONS unauthenticated actions: a user, its key and its policy. Anyone who spent
        # them first (another local user, in the second after start) makes these fail: up stops.
        iam = boto3.client(
            "iam",
            endpoint_url=self.s3_endpoint,
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
            region_name="us-east-1",
        )
        try:
            iam.create_user(UserName="autotransfer")
            key = iam.create_access_key(UserName="autotransfer")["AccessKey"]
            policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
            iam.put_user_policy(UserName="autotransfer", PolicyName="s3", PolicyDocument=json.dumps(policy))
        except ClientError as exc:
            raise StackError(
                f"S3 server on {self.s3_endpoint}: creating its key failed ({exc}); "
                "something else used its first requests"
            ) from exc
        self.access_key, self.secret_key = key["AccessKeyId"], key["SecretAccessKey"]
        self.save()
        s3 = boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
        )
        existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
        for bucket in (MLFLOW_BUCKET, DVC_BUCKET):
            if bucket not in existing:
                s3.create_bucket(Bucket=bucket)

    def start_mlflow(self) -> None:
        env = {**self._base_env(), **self.s3_env, **self.database_env}
        self._spawn(
            "mlflow",
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--host",
                HOST,
                "--port",
                str(self.ports["mlflow"]),
                "--workers",
                "1",
                "--backend-store-uri",
                f"postgresql+psycopg://postgres@{HOST}:{self.ports['postgres']}/mlflow",
                "--artifacts-destination",
                f"s3://{MLFLOW_BUCKET}/artifacts",
                "--serve-artifacts",
            ],
            env,
            f"{self.mlflow_uri}/health",
            timeout=180,
        )

    def prefect_env(self) -> dict[str, str]:
        return {
            **self._base_env(),
            "PREFECT_HOME": str(self.root / "prefect"),
            "PREFECT_API_URL": self.prefect_api,
            "PREFECT_API_AUTH_STRING": self.prefect_auth,
            "PREFECT_API_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://postgres@{HOST}:{self.ports['postgres']}/prefect",
        }

    def start_prefect(self) -> None:
        env = {**self.prefect_env(), **self.database_env, "PREFECT_SERVER_API_AUTH_STRING": self.prefect_auth}
        self._spawn(
            "prefect",
            [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(self.ports["prefect"])],
            env,
            f"{self.prefect_api}/health",
            timeout=180,
        )

    def start_worker(self, pool: str, cwd: Path) -> None:
        """A process worker for ``pool``; runs flows with this stack's MLflow as their registry."""
        env = {**self.prefect_env(), "MLFLOW_TRACKING_URI": self.mlflow_uri}
        env.pop("PREFECT_API_DATABASE_CONNECTION_URL")
        with self._log("worker") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=cwd,
            )
        self.pids["worker"] = process.pid
        self.save()

    def configure_dvc_remote(self, repo: Path) -> None:
        """The ``team`` remote as the default, endpoint and keys in ``.dvc/config.local`` (not in git)."""

        def dvc(*args: str) -> None:
            subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, check=True, capture_output=True)

        dvc("remote", "add", "--local", "--force", "--default", DVC_REMOTE, f"s3://{DVC_BUCKET}/cache")
        dvc("remote", "modify", "--local", DVC_REMOTE, "endpointurl", self.s3_endpoint)
        dvc("remote", "modify", "--local", DVC_REMOTE, "access_key_id", self.access_key)
        dvc("remote", "modify", "--local", DVC_REMOTE, "secret_access_key", self.secret_key)

    # ---------------------------------------------------------------- up / down
    def up(self, repo: Path | None = None, worker: bool = True, worker_cwd: Path | None = None) -> None:
        """Start everything; ``repo`` (a DVC project) gets the ``team`` remote."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.save()
        try:
            self.start_postgres()
            self.start_s3()
            self.start_mlflow()
            self.start_prefect()
            if worker:  # it creates the process pool when missing
                self.start_worker(POOL, worker_cwd or repo or Path.cwd())
            if repo is not None and (repo / ".dvc").is_dir():
                self.configure_dvc_remote(repo)
        except BaseException:
            self.down()
            raise

    def down(self) -> list[str]:
        """Stop everything ``up`` started (worker first, PostgreSQL last); returns what was stopped."""
        stopped = []
        for name in ("worker", "prefect", "mlflow", "s3"):
            pid = self.pids.pop(name, None)
            if pid is not None and terminate_group(pid):
                stopped.append(name)
        postmaster = self.pids.pop("postgres", None)
        if postmaster is not None or (self.root / "postgres/postmaster.pid").exists():
            as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
            subprocess.run(
                [
                    *as_postgres,
                    str(postgres_bin("pg_ctl")),
                    "-D",
                    str(self.root / "postgres"),
                    "-m",
                    "fast",
                    "-w",
                    "stop",
                ],
                capture_output=True,
            )
            # pg_ctl -w returns once postmaster.pid is gone, which the postmaster unlinks just before it exits
            if postmaster is not None:
                wait_gone(postmaster)
            stopped.append("postgres")
        if self.root.exists():
            self.save()
        return stopped


def describe(stack: Stack) -> str:
    return "\n".join(
        [
            f"PostgreSQL  {stack.postgres_url}  (databases mlflow, prefect; data {stack.root / 'postgres'})",
            f"S3 (moto)   {stack.s3_endpoint}  buckets {MLFLOW_BUCKET}, {DVC_BUCKET}",
            f"MLflow      {stack.mlflow_uri}  (registry on PostgreSQL, artifacts s3://{MLFLOW_BUCKET}/artifacts)",
            f"Prefect     {stack.prefect_api}  (PostgreSQL; basic auth, in {stack.root / 'env'}), "
            "worker on pool autotransfer-process",
            f"DVC remote  {DVC_REMOTE} -> s3://{DVC_BUCKET}/cache (.dvc/config.local)",
            f"logs        {stack.root / 'logs'}",
            f"use it:     source {stack.root / 'env'}; python -m flows.deploy; "
            "prefect deployment run retrain/nightly; dvc push",
        ]
    )
