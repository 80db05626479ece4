"""What earlier scans found per file, so that a rerun does not decode or hash an unchanged file.

Like DVC's state database: a file counts as unchanged when its path, size, modification
time (ns) and inode are those recorded; anything else (an edit, a copy over it, a touch)
is read again. The record also keeps ``max_pixels``, because the same file can pass or fail
under another limit. The database is a cache: when it is unreadable it is started afresh,
never trusted half-way, and the data folder is never written.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STATE_FILE = "scan_state.sqlite"
FIELDS = ("sha256", "width", "height", "mode", "format", "readable", "error")
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, inode INTEGER, "
    "max_pixels INTEGER, sha256 TEXT, width INTEGER, height INTEGER, mode TEXT, format TEXT, readable INTEGER, "
    "error TEXT)"
)


class ScanState:
    """A sqlite table of (path, size, mtime_ns, inode, max_pixels) -> what inspecting the file found."""

    def __init__(self, folder: str | Path | None) -> None:
        self.reused = 0
        self.read = 0
        self._db: sqlite3.Connection | None = None
        if folder is None:
            return
        path = Path(folder) / STATE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._open(path)
        except sqlite3.DatabaseError as exc:
            log.warning("%s: unreadable scan state (%s): starting afresh", path, exc)
            path.unlink(missing_ok=True)
            self._db = self._open(path)

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, timeout=30)
        db.execute(_SCHEMA)
        db.execute("SELECT count(*) FROM files").fetchone()  # a corrupt file fails here, not later
        return db

    def lookup(self, path: Path, stat: os.stat_result, max_pixels: int) -> dict[str, Any] | None:
        """The recorded findings for ``path`` if it is unchanged since, else None."""
        if self._db is None:
            return None
        row = self._db.execute(
            f"SELECT {', '.join(FIELDS)} FROM files WHERE path=? AND size=? AND mtime_ns=? AND inode=? "
            "AND max_pixels=?",
            (path.as_posix(), stat.st_size, stat.st_mtime_ns, stat.st_ino, max_pixels),
        ).fetchone()
        if row is None:
            return None
        found = dict(zip(FIELDS, row))
        found["readable"] = bool(found["readable"])
        return found

    def record(self, path: Path, stat: os.stat_result, max_pixels: int, found: dict[str, Any]) -> None:
        if self._db is None:
            return
        values = [int(found[k]) if k == "readable" else found[k] for k in FIELDS]
        self._db.execute(
            f"INSERT OR REPLACE INTO files (path, size, mtime_ns, inode, max_pixels, {', '.join(FIELDS)}) "
            f"VALUES (?, ?, ?, ?, ?, {', '.join('?' for _ in FIELDS)})",
            (path.as_posix(), stat.st_size, stat.st_mtime_ns, stat.st_ino, max_pixels, *values),
        )

    def close(self) -> None:
        if self._db is not None:
            self._db.commit()
            self._db.close()
            self._db = None
