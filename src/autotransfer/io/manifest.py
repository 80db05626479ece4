"""Scan domain folders into a manifest: one row per file, one row per (split, class) folder.

Layouts of a domain (docs/data.md)::

    <domain>/{train,val,test}/<class>/<image>     split folders: the split is the folder
    <domain>/<class>/<image>                      class folders: the split comes from the image's content
    <domain>/unlabeled/<image>                    (optional, in either layout)

In the class-folder layout each file's split is a function of its sha256 alone
(``split_by_content``), so it never changes as images arrive or leave: identical images
always share a split, and the test split only grows with new files.

Scanning reads every file but never changes anything on disk, and a bad file becomes a
row with ``readable=False`` and an ``error`` message rather than an exception.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autotransfer.io.images import inspect_image, sha256_file
from autotransfer.io.progress import Progress
from autotransfer.io.scan_state import ScanState

SPLITS = ("train", "val", "test")
UNLABELED = "unlabeled"
ROLES = ("source", "target")

MANIFEST_COLUMNS = [
    "path",
    "domain",
    "role",
    "split",
    "split_by",  # "folder": the split folder it is in; "content": its sha256 (class-folder layout)
    "label",
    "width",
    "height",
    "mode",
    "format",
    "bytes",
    "sha256",
    "readable",
    "error",
]
FOLDER_COLUMNS = ["folder", "domain", "role", "split", "label", "exists", "n_files", "n_readable", "split_by"]
# The split a class-folder layout gives a file before its content is hashed.
BY_CONTENT = "<by content>"


@dataclass(frozen=True)
class SplitShares:
    """Shares of a class-folder domain's images that go to val and to test (the rest: train)."""

    val: float
    test: float

    def split_of(self, sha256: str) -> str:
        """The split of an image with this content: its hash read as a number in [0, 1)."""
        position = int(sha256[:13], 16) / 16**13
        return "test" if position < self.test else "val" if position < self.test + self.val else "train"


@dataclass(frozen=True)
class Domain:
    name: str
    role: str
    path: Path
    # Symlinks must resolve inside this folder: data/ for the built-in domains, the
    # domain folder itself for a user's own folder elsewhere.
    root: Path
    shares: SplitShares = SplitShares(0.15, 0.2)  # for the class-folder layout

    @property
    def split_by_content(self) -> bool:
        """Class folders and no split folder: each file's split comes from its content hash."""
        return self.path.is_dir() and not any((self.path / split).is_dir() for split in SPLITS)


# Files that operating systems and tools leave in folders (besides dot files): never images.
SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini"})


def is_ignored(name: str) -> bool:
    """Hidden files and folders (``.DS_Store``, AppleDouble ``._*``, ``.git/``), Thumbs.db, desktop.ini."""
    return name.startswith(".") or name.lower() in SYSTEM_FILES


@dataclass(frozen=True)
class Scan:
    files: pd.DataFrame
    folders: pd.DataFrame
    ignored: tuple[str, ...] = ()  # paths skipped by ``is_ignored`` (a hidden folder once, not its content)
    reused: int = 0  # files unchanged since the last scan: not decoded or hashed again
    read: int = 0  # files decoded and hashed by this scan


def scan(domains: list[Domain], max_pixels: int, progress: bool | None = None, state: ScanState | None = None) -> Scan:
    """Scan ``domains``; with a ``state``, files unchanged since its last scan are not read again."""
    state = state or ScanState(None)
    planned: list[tuple[Domain, str, str | None, Path]] = []
    folder_rows: list[dict] = []
    ignored: list[Path] = []
    containment = _Containment()
    for domain in domains:
        domain_planned, domain_folders = _walk_domain(domain, ignored, containment)
        planned += domain_planned
        folder_rows += domain_folders

    rows = []
    with Progress("validate: scanning images", len(planned), "img", progress) as bar:
        for domain, split, label, path in planned:
            rows.append(_file_row(domain, split, label, path, max_pixels, state, containment))
            bar.update()
    for row, (domain, split, _, _) in zip(rows, planned):
        row["split_by"] = "content" if split == BY_CONTENT else "folder"
        if split == BY_CONTENT:  # unhashed (not a file, or a link out of the data): never used anyway
            row["split"] = domain.shares.split_of(row["sha256"]) if row["sha256"] else "train"
    files = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    files = files.astype({"width": "Int64", "height": "Int64", "bytes": "Int64", "readable": bool})
    folders = pd.DataFrame(folder_rows, columns=FOLDER_COLUMNS)
    readable = files[files["readable"]].groupby(["domain", "split", "label"]).size()
    total = files.groupby(["domain", "split", "label"]).size()
    keys = list(zip(folders["domain"], folders["split"], folders["label"]))
    folders["n_files"] = [int(total.get(key, 0)) for key in keys]
    folders["n_readable"] = [int(readable.get(key, 0)) for key in keys]
    return Scan(
        files=files,
        folders=folders,
        ignored=tuple(printable(p) for p in ignored),
        reused=state.reused,
        read=state.read,
    )


def _walk_domain(
    domain: Domain, ignored: list[Path], containment: _Containment
) -> tuple[list[tuple[Domain, str, str | None, Path]], list[dict]]:
    planned: list[tuple[Domain, str, str | None, Path]] = []
    folders: list[dict] = []
    classes_by_split: dict[str, set[str]] = {}

    def folder_row(path: Path, split: str, label: str | None, exists: bool) -> dict:
        return {
            "folder": path.as_posix(),
            "domain": domain.name,
            "role": domain.role,
            "split": split,
            "label": label,
            "exists": exists,
            "n_files": 0,
            "n_readable": 0,
            "split_by": "folder",
        }

    if domain.split_by_content:
        return _walk_class_folders(domain, ignored, containment)
    for split in SPLITS:
        split_dir = domain.path / split
        if not split_dir.is_dir():
            folders.append(folder_row(split_dir, split, None, False))
            continue
        folders.append(folder_row(split_dir, split, None, True))
        classes_by_split[split] = set()
        for entry in sorted(split_dir.iterdir()):
            if is_ignored(entry.name):
                ignored.append(entry)
            elif entry.is_dir() and is_utf8(entry) and not containment.escapes(entry, domain.root):
                classes_by_split[split].add(entry.name)
                folders.append(folder_row(entry, split, entry.name, True))
                planned += [(domain, split, entry.name, f) for f in _files_under(entry, domain.root, ignored)]
            else:
                # A stray file next to the class folders, a link leading out of the data, or a
                # folder whose name is not UTF-8 (a class name must be text): each a named row.
                planned.append((domain, split, None, entry))

    # A class known in one split but absent from another still gets a folder row, so that
    # "class in val/test but not in train" shows up as a missing (empty) train folder.
    all_classes = set().union(*classes_by_split.values()) if classes_by_split else set()
    for split, present in classes_by_split.items():
        for label in sorted(all_classes - present):
            folders.append(folder_row(domain.path / split / label, split, label, False))

    unlabeled_dir = domain.path / UNLABELED
    if unlabeled_dir.is_dir():
        planned += [(domain, UNLABELED, None, f) for f in _files_under(unlabeled_dir, domain.root, ignored)]
    return planned, folders


def _walk_class_folders(
    domain: Domain, ignored: list[Path], containment: _Containment
) -> tuple[list[tuple[Domain, str, str | None, Path]], list[dict]]:
    """``<domain>/<class>/*``: every class gets a (split, class) row per split, its files a split by content."""
    planned: list[tuple[Domain, str, str | None, Path]] = []
    folders: list[dict] = []
    base = {"domain": domain.name, "role": domain.role, "exists": True, "n_files": 0, "n_readable": 0}
    for split in SPLITS:
        folders.append({**base, "folder": domain.path.as_posix(), "split": split, "label": None, "split_by": "content"})
    for entry in sorted(domain.path.iterdir()):
        if is_ignored(entry.name):
            ignored.append(entry)
        elif entry.name == UNLABELED and entry.is_dir():
            planned += [(domain, UNLABELED, None, f) for f in _files_under(entry, domain.root, ignored)]
        elif entry.is_dir() and is_utf8(entry) and not containment.escapes(entry, domain.root):
            for split in SPLITS:
                name = f"{entry.as_posix()} ({split} split, by content)"
                folders.append({**base, "folder": name, "split": split, "label": entry.name, "split_by": "content"})
            planned += [(domain, BY_CONTENT, entry.name, f) for f in _files_under(entry, domain.root, ignored)]
        else:
            planned.append((domain, BY_CONTENT, None, entry))  # a stray file next to the class folders
    return planned, folders


def _files_under(folder: Path, root: Path, ignored: list[Path]) -> list[Path]:
    """Every file below ``folder``, sub-folders included; hidden and system names go to ``ignored``."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):  # does not follow directory links
        base = Path(dirpath)
        ignored += [base / name for name in sorted(dirnames) if is_ignored(name)]
        dirnames[:] = sorted(name for name in dirnames if not is_ignored(name))  # not walked into
        for name in dirnames:
            if (base / name).is_symlink():
                found.append(base / name)  # reported as a row (escaping or not a file)
        for name in sorted(filenames):
            (ignored if is_ignored(name) else found).append(base / name)
    return found


def printable(path: Path) -> str:
    """``path`` as text; bytes of a name that are not UTF-8 shown as ``\\xNN`` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def is_utf8(path: Path) -> bool:
    """Whether the name is text: a name in another encoding (old archives, Samba shares) is read by
    Python with surrogate escapes, which no database, CSV or JSON report can hold."""
    return printable(path) == path.as_posix()


def real_path(path: Path) -> Path | None:
    """Where ``path`` really is, links followed; None for a link loop."""
    try:
        return path.resolve()
    except (RuntimeError, OSError):  # pathlib: RuntimeError "Symlink loop" (3.11), OSError ELOOP (3.13)
        return None


class _Containment:
    """Whether a path leads outside its data root, for many paths under few folders.

    Resolving follows every link on the way, so a linked split or class folder counts too.
    A path that is not itself a link lies where its folder really is, so only links and
    each distinct folder are resolved, once (resolving every file cost 0.3 ms, most of a rerun).
    """

    def __init__(self) -> None:
        self._roots: dict[Path, Path] = {}
        self._folders: dict[Path, Path] = {}

    def escapes(self, path: Path, root: Path) -> bool:
        real_root = self._roots.get(root)
        if real_root is None:
            real_root = self._roots[root] = root.resolve()
        if path.is_symlink():
            real = real_path(path)
            return real is None or not real.is_relative_to(real_root)
        folder = self._folders.get(path.parent)
        if folder is None:
            folder = self._folders[path.parent] = path.parent.resolve()
        return not (folder / path.name).is_relative_to(real_root)


def _file_row(
    domain: Domain,
    split: str,
    label: str | None,
    path: Path,
    max_pixels: int,
    state: ScanState,
    containment: _Containment,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "path": path.as_posix(),
        "domain": domain.name,
        "role": domain.role,
        "split": split,
        "split_by": None,
        "label": label,
        "width": None,
        "height": None,
        "mode": None,
        "format": None,
        "bytes": None,
        "sha256": None,
        "readable": False,
        "error": None,
    }
    if not is_utf8(path):
        row["path"] = printable(path)
        row["error"] = "the name is not valid UTF-8 (its bytes shown as \\x escapes): rename it to be read"
        return row
    if containment.escapes(path, domain.root):
        real = real_path(path)
        row["error"] = (
            "link loop (it leads back to itself): refused"
            if real is None
            else f"link leads outside the data root {domain.root.as_posix()!r} (to {real.as_posix()!r}): refused"
        )
        return row
    if label is None and split != UNLABELED:
        where = f"{split}/" if split != BY_CONTENT else domain.path.as_posix()
        row["error"] = f"not inside a class folder of {where}"
        return row
    if not path.is_file():
        row["error"] = "not a regular file"
        return row
    try:
        return _inspected(row, path, max_pixels, state)
    except OSError as exc:  # deleted, made unreadable or replaced while the scan ran
        row["error"] = f"could not be read ({exc.strerror or exc}): it changed while scanned, or is not readable"
        return row


def _inspected(row: dict[str, Any], path: Path, max_pixels: int, state: ScanState) -> dict[str, Any]:
    before = path.stat()
    row["bytes"] = before.st_size
    found = state.lookup(path, before, max_pixels)
    if found is not None:
        state.reused += 1
        row.update(found)
        return row
    state.read += 1
    sha256 = sha256_file(path)
    info = inspect_image(path, max_pixels)
    found = {
        "sha256": sha256,
        "width": info.width,
        "height": info.height,
        "mode": info.mode,
        "format": info.format,
        "readable": info.readable,
        "error": info.error,
    }
    after = path.stat()
    if (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino):
        state.record(path, before, max_pixels, found)  # not a file that changed while it was read
    row.update(found)
    return row


def assign_usage(files: pd.DataFrame, target: str, labeled_per_class: int | None, seed: int) -> pd.Series:
    """What each file is used for: ``train``, ``val``, ``test``, ``unlabeled`` or ``unused``.

    The cap on labeled target images covers train and val together and is split between
    them in proportion to their sizes; the capped-away target train images become
    unlabeled (usable by DANN, never by a supervised loss). The test split is never
    trained on and never capped (evaluate and the champion gate score on it). Unreadable files are ``unused``.
    """
    usage = files["split"].where(files["readable"], "unused").copy()
    if labeled_per_class is None:
        return usage
    is_target = (files["domain"] == target) & files["readable"]
    for index, label in enumerate(
        sorted(files.loc[is_target & files["split"].isin(["train", "val"]), "label"].unique())
    ):
        rng = np.random.default_rng([seed, index])
        train = files.index[is_target & (files["split"] == "train") & (files["label"] == label)]
        val = files.index[is_target & (files["split"] == "val") & (files["label"] == label)]
        train = train[rng.permutation(len(train))]
        val = val[rng.permutation(len(val))]
        n_val = min(len(val), labeled_per_class * len(val) // max(1, len(train) + len(val)))
        n_train = min(len(train), labeled_per_class - n_val)
        usage.loc[train[n_train:]] = UNLABELED
        usage.loc[val[n_val:]] = UNLABELED
    return usage
