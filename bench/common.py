"""Shared pieces of the benchmarks: where the demo data is, repeats, how results are saved."""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
WORK = RESULTS / "tmp"  # git-ignored scratch space: absent in a fresh clone
WORK.mkdir(parents=True, exist_ok=True)


def demo_root() -> Path:
    """The demo domains: data/ when `make run` built it, else a private copy built once here."""
    if (REPO / "data" / "digits" / "test").is_dir():
        return REPO / "data"
    out = WORK / "data"
    if not (out / "digits" / "test").is_dir():
        from autotransfer.config import DemoConfig
        from autotransfer.io.demo_data import build_demo_data

        build_demo_data(DemoConfig(), out=out, progress=False)
    return out


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def spread(values: list[float]) -> dict[str, float]:
    return {"mean": float(statistics.mean(values)), "std": float(statistics.stdev(values)) if len(values) > 1 else 0.0,
            "min": float(min(values)), "max": float(max(values)), "n": len(values)}


def machine() -> dict[str, Any]:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def merged(name: str, scenarios: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``--merge``: these scenarios' fresh results laid over the saved file's others.

    Returns the scenarios in their saved order (unseen ones last) and the provenance: which
    command and date measured which scenarios, so the report can say so.
    """
    path = RESULTS / f"{name}.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    history = old.get("provenance") or [{"command": old.get("command"), "date": old.get("machine", {}).get("date"),
                                          "scenarios": list(old.get("scenarios", {}))}]
    history = [{**h, "scenarios": [s for s in h["scenarios"] if s not in scenarios]} for h in history]
    history = [h for h in history if h["scenarios"]]
    history.append({"command": shlex.join(sys.argv), "date": machine()["date"], "scenarios": list(scenarios)})
    combined = {k: scenarios.get(k, v) for k, v in old.get("scenarios", {}).items()}
    combined.update({k: v for k, v in scenarios.items() if k not in combined})
    return combined, history


def save(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "machine": machine(), "command": shlex.join(sys.argv),
                                **payload}, indent=2) + "\n")
    print(f"wrote {path.relative_to(REPO)}")
    return path
