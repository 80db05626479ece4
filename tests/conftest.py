"""Shared fixtures: small real image folders, the demo data built once, no network."""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from autotransfer.config import Params, params_from_dict
from servers import running

_real_connect = socket.socket.connect

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one worker per core: a thread each (and each process it starts), not
    # every worker's torch spinning a thread per core on the others' cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)


_TIMELINE = os.environ.get("AUTOTRANSFER_TEST_TIMELINE")  # a file: one JSON line per test, to see how workers share


if _TIMELINE:
    import json
    import time

    _started: dict[str, float] = {}

    def pytest_runtest_logstart(nodeid: str, location: object) -> None:
        _started[nodeid] = time.time()

    def pytest_runtest_logfinish(nodeid: str, location: object) -> None:
        line = {"worker": os.environ.get("PYTEST_XDIST_WORKER", "main"), "test": nodeid,
                "start": _started.pop(nodeid, None), "end": time.time()}
        with open(_TIMELINE, "a") as out:
            out.write(json.dumps(line) + "\n")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The team-stack tests first, then the longest one: `--dist worksteal` gives each worker a contiguous
    share and steals from its end, so these stay on the first worker (one stack of servers, not one per
    worker: ~30 s each) and the run does not end on a four-minute test."""

    def rank(item: pytest.Item) -> int:
        if "team" in getattr(item, "fixturenames", ()):
            return 0
        return 1 if item.name.startswith("test_fresh_clone_") else 2

    items.sort(key=rank)  # stable: the rest keeps its order


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing may download at run time: any connection beyond loopback fails the test."""

    def guarded(self: socket.socket, address: object) -> object:
        if isinstance(address, tuple) and address:
            host = str(address[0])
            try:
                loopback = ipaddress.ip_address(host).is_loopback
            except ValueError:
                loopback = host == "localhost"
            if not loopback:
                raise AssertionError(f"test tried to reach the network: {address!r}")
        return _real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


REPO_STORE = Path(__file__).resolve().parents[1] / "mlflow" / "mlflow.db"


@pytest.fixture(scope="session", autouse=True)
def checkout_store_untouched():
    """No test writes to the checkout's own MLflow store (mlflow/mlflow.db: the user's registry)."""
    before = REPO_STORE.stat().st_mtime_ns if REPO_STORE.exists() else None
    yield
    after = REPO_STORE.stat().st_mtime_ns if REPO_STORE.exists() else None
    assert after == before, f"a test wrote to {REPO_STORE}: give it a registry.tracking_uri of its own"


def write_image(path: Path, seed: int, size: int = 16, mode: str = "L") -> Path:
    """A small image with content unique to ``seed``."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").convert(mode).save(path)
    return path


def make_domain(root: Path, name: str, classes: tuple[str, ...] = ("a", "b"), n_train: int = 6,
                n_val: int = 2, n_test: int = 2, seed: int = 0, size: int = 16) -> Path:
    """A valid ImageFolder domain: ``root/name/{train,val,test}/<class>/NN.png``."""
    domain = root / name
    counter = seed * 100_000
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        for label in classes:
            for i in range(n):
                counter += 1
                write_image(domain / split / label / f"{i:02d}.png", counter, size=size)
    return domain


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """A valid two-domain data root (source ``src``, target ``tgt``)."""
    root = tmp_path / "data"
    make_domain(root, "src", seed=1)
    make_domain(root, "tgt", seed=2)
    return root


def params_for(root: Path, **sections: dict) -> Params:
    raw: dict = {"data": {"root": str(root), "source": "src", "target": "tgt"}}
    for key, values in sections.items():
        raw.setdefault(key, {}).update(values)
    return params_from_dict(raw)


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real demo data, built once per session (~5 s)."""
    from autotransfer.config import DemoConfig
    from autotransfer.io.demo_data import build_demo_data

    out = tmp_path_factory.mktemp("demo") / "data"
    build_demo_data(DemoConfig(), out=out, progress=False)
    return out


@pytest.fixture(scope="session")
def small_demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo domains with 100 synth-digits images per class, not 300 (digits and digits-m as in the
    demo): the flow tests scan, pretrain on and measure a third of the source (~3 s to build)."""
    from autotransfer.config import DemoConfig
    from autotransfer.io.demo_data import build_demo_data

    out = tmp_path_factory.mktemp("small-demo") / "data"
    build_demo_data(DemoConfig(synth_per_class=100), out=out, progress=False)
    return out


@pytest.fixture(scope="session")
def prefect_harness():
    """A throwaway Prefect server and database for the session's flow runs (~10 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture(scope="session")
def prefect_api(prefect_harness) -> str:
    """The session server's API URL, for a flow run in a process of its own: that process then
    starts no temporary server (10-20 s of CPU under load; the tests of that server use their own)."""
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value())


@pytest.fixture(scope="session")
def s3_stack():
    """The team stack's S3 server alone (moto on 127.0.0.1, ~3 s): a DVC remote without the rest."""
    import tempfile

    from autotransfer.ops.processes import free_port
    from autotransfer.ops.stack import Stack

    root = Path(tempfile.mkdtemp(prefix="autotransfer-s3-"))
    stack = Stack(root, ports={name: free_port() for name in ("postgres", "s3", "mlflow", "prefect")})
    try:
        stack.start_s3()
        yield stack
    finally:
        pid = stack.pids.get("s3")
        stack.down()
        assert pid is None or not running(pid), "the S3 server was left running"
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def team():
    """PostgreSQL, an S3 server, MLflow and Prefect servers and a worker on 127.0.0.1 (~30 s to start)."""
    import tempfile
    import time

    from autotransfer.ops.processes import StackError, free_port, postgres_bin
    from autotransfer.ops.stack import Stack

    try:
        postgres_bin("initdb")
    except StackError as exc:  # the only allowed skip: no PostgreSQL on this machine
        pytest.skip(str(exc))
    root = Path(tempfile.mkdtemp(prefix="autotransfer-stack-"))
    root.chmod(0o755)  # the postgres user must reach its cluster folder
    stack = Stack(root, ports={name: free_port() for name in ("postgres", "s3", "mlflow", "prefect")})
    started = time.perf_counter()
    try:
        stack.up(repo=None, worker=True, worker_cwd=root)
        print(f"stack up in {time.perf_counter() - started:.1f} s")
        yield stack
    finally:
        pids = dict(stack.pids)
        stack.down()
        left = [name for name, pid in pids.items() if running(pid)]
        assert not left, f"left running after stack.down(): {left}"
        shutil.rmtree(root, ignore_errors=True)  # the cluster, the S3 server's state, logs


@pytest.fixture
def ready(data_root: Path, tmp_path: Path) -> Params:
    """Validated tiny domains and a pretrained small_cnn source model (3 epochs, batch 4, no early stop)."""
    from autotransfer.stages.pipeline import PRETRAIN, VALIDATE
    from stage_helpers import tiny_params

    params = tiny_params(data_root, tmp_path, train={"epochs": 3, "batch_size": 4, "patience": 0})
    VALIDATE.run(params, progress=False)
    PRETRAIN.run(params, progress=False)
    return params
