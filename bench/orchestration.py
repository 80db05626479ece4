"""Orchestration overhead: the Prefect `retrain` flow vs the same stage functions called directly.

Both start from empty output folders with the same params (a fresh work dir per run, so
no Prefect cache hit and no registry shortcut), run validate -> pretrain -> similarity ->
plan -> train -> evaluate -> register, and are timed end to end in one process. The
Prefect temporary server is started once before the timed runs (its cold start is
reported on its own: `autotransfer run` pays it once per process). Repeats alternate.

    python bench/orchestration.py [--repeats 3] [--demo]     # --demo: the full demo params
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import yaml
from prefect import flow

from autotransfer.config import load_params
from autotransfer.stages.pipeline import STAGES
from common import WORK, demo_root, median, save

SMALL = ["backbone.arch=small_cnn", "backbone.weights=null", "backbone.input_size=32", "pretrain.epochs=2", "train.epochs=4", "similarity.n_per_domain=200"]


def overrides(work: Path, demo: bool) -> list[str]:
    return [f"data.root={demo_root()}", f"reports.dir={work}/reports", f"pretrain.out={work}/models/source",
            f"train.out={work}/models/target", f"similarity.cache_dir={work}/cache",
            f"registry.tracking_uri=sqlite:///{work}/mlflow.db", *([] if demo else SMALL)]


def direct(work: Path, demo: bool) -> float:
    params = load_params(None, overrides(work, demo))
    started = time.perf_counter()
    for stage in STAGES:  # every stage, register included, as the flow runs them
        stage.run(params, progress=False)
    return time.perf_counter() - started


def through_the_flow(work: Path, demo: bool) -> float:
    from flows.retrain import retrain

    params = load_params(None, overrides(work, demo))
    file = work / "params.yaml"
    work.mkdir(parents=True, exist_ok=True)
    file.write_text(yaml.safe_dump(params.model_dump(mode="json")))
    started = time.perf_counter()
    result = retrain(params_file=str(file))
    assert not result["skipped"]
    return time.perf_counter() - started


@flow
def warm_up() -> int:
    return 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--demo", action="store_true", help="the demo's params (resnet18) instead of small_cnn")
    args = parser.parse_args()
    import great_expectations  # noqa: F401  (heavy imports paid before timing, by both sides alike)

    started = time.perf_counter()
    warm_up()  # starts Prefect's temporary server for this process
    server_start_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        direct(Path(tmp), demo=False)  # untimed: first-call costs (kernels, allocators, GX) are nobody's overhead
    rows = []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory(dir=WORK) as a, tempfile.TemporaryDirectory(dir=WORK) as b:
            if repeat % 2 == 0:  # alternate which goes first
                direct_s = direct(Path(a), args.demo)
                flow_s = through_the_flow(Path(b), args.demo)
            else:
                flow_s = through_the_flow(Path(b), args.demo)
                direct_s = direct(Path(a), args.demo)
        rows.append({"repeat": repeat, "direct_s": direct_s, "flow_s": flow_s, "overhead_s": flow_s - direct_s,
                     "overhead_share": (flow_s - direct_s) / flow_s})
        print(f"repeat {repeat}: direct {direct_s:.1f} s, flow {flow_s:.1f} s, overhead {flow_s - direct_s:+.1f} s")
    direct_s, flow_s = median([r["direct_s"] for r in rows]), median([r["flow_s"] for r in rows])
    summary = {"direct_s": direct_s, "flow_s": flow_s, "overhead_s": flow_s - direct_s,
               "overhead_share": (flow_s - direct_s) / flow_s, "server_start_s": server_start_s,
               "overhead_range_s": [min(r["overhead_s"] for r in rows), max(r["overhead_s"] for r in rows)]}
    save("orchestration", {"setup": {"params": "demo (resnet18)" if args.demo else "small_cnn, 4 epochs"},
                           "repeats": rows, "median": summary, "target": {"overhead_share": 0.15}})


if __name__ == "__main__":
    main()
