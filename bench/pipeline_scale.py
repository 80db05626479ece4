"""The data pipeline at scale: validation reruns, and the train stage's memory at N and 10·N images.

Generated data (``--small`` and ``--large`` images of 10 classes, 32-px PNGs with a
class-dependent brightness, 10 % val, 10 % test, the same amount in the source domain).
Each measurement is its own `autotransfer` process (its wall time and peak RSS from
``os.wait4``), repeated and interleaved:
- validation: a first scan (empty state) then a rerun over the unchanged files;
- train stage: ``--force scratch`` on small_cnn at 32 px for one epoch, with the decoded
  cache on (the default) and off (decoded into memory, as before the cache), at N and 10·N.

    python bench/pipeline_scale.py [--small 5000] [--large 50000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from common import WORK, median, save

CLASSES = 10
SPLITS = ("train", "val", "test")
CLI = str(Path(sys.executable).parent / "autotransfer")


def _write(args: tuple[str, int, int]) -> None:
    path, label, seed = args
    rng = np.random.default_rng(seed)
    pixels = (rng.integers(0, 120, size=(32, 32, 3)) + 13 * label).astype(np.uint8)
    Image.fromarray(pixels, "RGB").save(path)


def make_data(root: Path, n: int) -> Path:
    """``n`` target train images (plus val and test, 10 % each) and as many source ones."""
    if (root / ".complete").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    jobs = []
    for d, domain in enumerate(("src", "tgt")):
        for split, count in (("train", n), ("val", n // 10), ("test", n // 10)):
            for i in range(count):
                label = i % CLASSES
                folder = root / domain / split / f"c{label}"
                jobs.append((str(folder / f"{i:06d}.png"), label, d * 10**7 + SPLITS.index(split) * 10**6 + i))
    for folder in {Path(p).parent for p, _, _ in jobs}:
        folder.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor() as pool:
        list(pool.map(_write, jobs, chunksize=500))
    (root / ".complete").touch()
    return root


def run(args: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one `autotransfer` process."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    started = time.perf_counter()
    proc = subprocess.Popen([CLI, *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"autotransfer {' '.join(args)} failed:\n{out.decode()[-3000:]}")
    return seconds, usage.ru_maxrss / 1024


def options(work: Path, data: Path, extra: list[str] = ()) -> list[str]:
    return ["-S", f"data.root={data}", "-S", "data.source=src", "-S", "data.target=tgt",
            "-S", "backbone.arch=small_cnn", "-S", f"backbone.weights={work / 'init.safetensors'}",
            "-S", "backbone.input_size=32", "-S", f"reports.dir={work}/reports", "-S", f"train.out={work}/model",
            "-S", f"similarity.cache_dir={work}/features", "-S", "similarity.n_per_domain=200",
            "-S", "similarity.max_labeled=500", "-S", "train.epochs=1", "-S", "train.floor=false",
            "-S", f"validation.state_dir={work}/state", "-S", f"data.decoded_cache={work}/decoded",
            "-S", "train.device=cpu", *extra]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", type=int, default=5000)
    parser.add_argument("--large", type=int, default=50000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from safetensors.torch import save_file

    from autotransfer.models.backbones import TransferModel

    base = WORK / "pipeline_scale"
    sizes = {"N": args.small, "10N": args.large}
    data = {k: make_data(base / f"data-{n}", n) for k, n in sizes.items()}
    results: dict[str, dict[str, list[float]]] = {}

    def record(name: str, seconds: float, rss: float) -> None:
        results.setdefault(name, {"seconds": [], "rss_mb": []})
        results[name]["seconds"].append(seconds)
        results[name]["rss_mb"].append(rss)
        print(f"{name}: {seconds:.1f} s, peak RSS {rss:.0f} MB", flush=True)

    for repeat in range(args.repeats):
        for key in sizes:
            work = base / f"work-{key}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            save_file(TransferModel("small_cnn", CLASSES, 32).state_dict(), str(work / "init.safetensors"))
            opts = options(work, data[key])
            record(f"validate first {key}", *run(["validate", "--no-progress", *opts], work))
            record(f"validate rerun {key}", *run(["validate", "--no-progress", *opts], work))
            run(["similarity", "--no-progress", *opts], work)
            run(["plan", *opts], work)
            for cache in ("on", "off"):
                extra = [] if cache == "on" else ["-S", "data.decoded_cache=null"]
                shutil.rmtree(work / "model", ignore_errors=True)
                record(f"train cache {cache} {key}",
                       *run(["train", "--no-progress", "--force", "scratch", *options(work, data[key], extra)], work))

    summary = {name: {k: {"median": median(v), "min": min(v), "max": max(v)} for k, v in r.items()}
               for name, r in results.items()}
    ratios = {
        "validate rerun / first, 10N (seconds)": median(results["validate rerun 10N"]["seconds"])
        / median(results["validate first 10N"]["seconds"]),
        "train RSS 10N / N, cache on": median(results["train cache on 10N"]["rss_mb"])
        / median(results["train cache on N"]["rss_mb"]),
        "train RSS 10N / N, cache off": median(results["train cache off 10N"]["rss_mb"])
        / median(results["train cache off N"]["rss_mb"]),
    }
    for name, value in ratios.items():
        print(f"{name}: {value:.3f}")
    save("pipeline_scale", {"setup": {"sizes": sizes, "repeats": args.repeats, "classes": CLASSES,
                                      "images": "32-px PNG, 10 % val, 10 % test, a source domain of the same size"},
                            "runs": results, "summary": summary, "ratios": ratios})


if __name__ == "__main__":
    main()
