"""Similarity cost: seconds of each measure vs the number of samples (a measurement, not a test).

Random features of the width the demo backbone produces (resnet18: 512), two domains
shifted apart, 10 classes. Each measure at each n, median of the repeats. MMD² is
quadratic in n (an n×n kernel matrix): it is measured up to --mmd-max and the stage never
goes beyond `similarity.n_per_domain`; LogME and the probe see at most
`similarity.max_labeled` labeled images in the stage. The last row is the stage's cost
at its configured caps: what a run pays whatever the dataset size.

    python bench/similarity_cost.py [--sizes 1000 5000 10000 20000 50000] [--repeats 3]
"""

from __future__ import annotations

import argparse

import numpy as np

from autotransfer.config import SimilarityConfig
from autotransfer.analysis.similarity import frechet_distance, linear_probe_accuracy, logme, mmd2_rbf, proxy_a_distance
from common import median, save, timed

DIM = 512


def features(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n)
    centers = rng.normal(size=(10, DIM))
    source = centers[labels] + rng.normal(size=(n, DIM))
    target = centers[labels] + rng.normal(size=(n, DIM)) + 0.5
    return source.astype(np.float32), target.astype(np.float32), labels


MEASURES = {
    "pad": lambda s, t, y: proxy_a_distance(s, t),
    "mmd2_rbf": lambda s, t, y: mmd2_rbf(s, t),
    "frechet": lambda s, t, y: frechet_distance(s, t),
    "logme": lambda s, t, y: logme(t, y),
    "linear_probe": lambda s, t, y: linear_probe_accuracy(t, y, folds=5),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 5000, 10000, 20000, 50000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mmd-max", type=int, default=5000)
    args = parser.parse_args()
    caps = SimilarityConfig()
    rows = []
    for n in args.sizes:
        source, target, labels = features(n, seed=n)
        row = {"n": n}
        for name, measure in MEASURES.items():
            if name == "mmd2_rbf" and n > args.mmd_max:
                row[name] = None
                continue
            row[name] = median([timed(lambda: measure(source, target, labels))[0] for _ in range(args.repeats)])
        rows.append(row)
        print(n, {k: (None if v is None else round(v, 3)) for k, v in row.items() if k != "n"})
    source, target, labels = features(max(caps.n_per_domain, caps.max_labeled), seed=1)
    n_dom, n_lab = caps.n_per_domain, caps.max_labeled
    stage = {"n": f"stage caps ({n_dom} per domain, {n_lab} labeled)"}
    for name, measure in MEASURES.items():
        n = n_lab if name in ("logme", "linear_probe") else n_dom
        stage[name] = median([timed(lambda: measure(source[:n], target[:n], labels[:n]))[0]
                              for _ in range(args.repeats)])
    print("stage", stage)
    save("similarity_cost", {"setup": {"dim": DIM, "classes": 10, "mmd_max": args.mmd_max},
                             "rows": rows, "stage_caps": stage})


if __name__ == "__main__":
    main()
