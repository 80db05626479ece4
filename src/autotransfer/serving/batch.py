"""Batch prediction: files and folders in, one row per image out, bad files listed, not fatal.

``autotransfer predict`` labels whatever it is given: image files, and folders searched
recursively for image files. It feeds the model a batch at a time (memory stays bounded
however many files there are); a batch holding a file that does not decode is retried file
by file, so one bad file costs its own row, not its batch's.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from autotransfer.errors import ImageDecodeError
from autotransfer.io.images import IMAGE_EXTENSIONS
from autotransfer.io.progress import bar_disabled
from autotransfer.serving.predict import Prediction, Predictor


@dataclass(frozen=True)
class Labeled:
    path: Path
    prediction: Prediction


@dataclass(frozen=True)
class Unreadable:
    path: Path
    error: str


def find_images(paths: Iterable[Path]) -> tuple[list[Path], list[Unreadable]]:
    """Files as given (whatever their extension: a bad one is reported, not skipped), folders searched
    recursively for files with an image extension, in sorted order; paths that do not exist."""
    files: list[Path] = []
    missing: list[Unreadable] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        elif path.is_file():
            files.append(path)
        else:
            missing.append(Unreadable(path, "no such file or folder"))
    return files, missing


def predict_files(
    predictor: Predictor, files: list[Path], batch_size: int = 64, top_k: int = 1, progress: bool | None = None
) -> list[Labeled | Unreadable]:
    """One result per file, in order."""
    out: list[Labeled | Unreadable] = []
    with tqdm(total=len(files), unit="img", desc="predict", disable=bar_disabled(progress, len(files), 200)) as bar:
        for start in range(0, len(files), batch_size):
            batch = files[start : start + batch_size]
            try:
                out += [Labeled(p, pred) for p, pred in zip(batch, predictor(batch, top_k))]
            except (ImageDecodeError, OSError):
                out += [_one(predictor, path, top_k) for path in batch]
            bar.update(len(batch))
    return out


def _one(predictor: Predictor, path: Path, top_k: int) -> Labeled | Unreadable:
    try:
        return Labeled(path, predictor([path], top_k)[0])
    except ImageDecodeError as exc:
        return Unreadable(path, str(exc).removeprefix(f"{path}: ").removeprefix("image 0: "))
    except OSError as exc:
        return Unreadable(path, f"{type(exc).__name__}: {exc.strerror or exc}")


def write_csv(results: list[Labeled | Unreadable], out: Path, top_k: int) -> None:
    """``path, label, probability[, label_2, probability_2, …], error``: one row per file, the bad ones too."""
    header = ["path", "label", "probability"]
    for rank in range(2, top_k + 1):
        header += [f"label_{rank}", f"probability_{rank}"]
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    with partial.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*header, "error"])
        for result in results:
            if isinstance(result, Labeled):
                cells: list[object] = []
                for label, probability in result.prediction.top[:top_k]:
                    cells += [label, f"{probability:.6f}"]
                cells += [""] * (len(header) - 1 - len(cells))
                writer.writerow([result.path, *cells, ""])
            else:
                writer.writerow([result.path, *[""] * (len(header) - 1), result.error])
    partial.replace(out)  # a reader never sees half a file
