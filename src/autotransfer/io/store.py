"""Decoded images at the training size: in memory, or in an on-disk cache read batch by batch.

An ``ImageStore`` hands out uint8 batches ``(n, 3, S, S)`` by index (a tensor of positions
or a slice), which is all training, features and evaluation ask of it.
``TensorStore`` holds them in memory; ``FileStore`` reads them from a raw uint8 file with
``os.pread``, so a process holds one batch at a time however many images there are (the
file's pages live in the OS page cache, not in the process). ``DecodedCache`` builds those
files once per (file contents, size, filter), keyed like the feature cache: a rerun, or
another stage on the same images, decodes nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from autotransfer.io.files import write_atomic, write_text

log = logging.getLogger(__name__)

Index = torch.Tensor | slice


class ImageStore:
    """uint8 images ``(N, 3, S, S)`` served by index."""

    side: int

    def __len__(self) -> int:
        raise NotImplementedError

    def rows(self, positions: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def __getitem__(self, index: Index) -> torch.Tensor:
        if isinstance(index, slice):
            positions = np.arange(len(self))[index]
        else:
            positions = index.cpu().numpy().reshape(-1).astype(np.int64)
        return self.rows(positions)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self), 3, self.side, self.side)

    def has_colour(self) -> bool:
        """Whether any image has channels that differ (not just an RGB file mode)."""
        raise NotImplementedError

    def chunks(self, size: int) -> Sequence[torch.Tensor]:
        return [self[start : start + size] for start in range(0, len(self), size)]


class TensorStore(ImageStore):
    def __init__(self, images: torch.Tensor) -> None:
        self.images = images
        self.side = int(images.shape[-1])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def rows(self, positions: np.ndarray) -> torch.Tensor:
        return self.images[torch.from_numpy(positions)]

    def __getitem__(self, index: Index) -> torch.Tensor:
        return self.images[index]  # a slice stays a view, as before stores existed

    def has_colour(self) -> bool:
        x = self.images
        return bool(len(x)) and bool((x[:, 0] != x[:, 1]).any() or (x[:, 1] != x[:, 2]).any())


class FileStore(ImageStore):
    """Images ``(N, S, S, 3)`` row after row in a raw file; each batch is read with ``os.pread``."""

    def __init__(self, path: Path, count: int, side: int, colour: bool) -> None:
        self.path, self.count, self.side, self.colour = path, count, side, colour
        self.row_bytes = side * side * 3
        self._fd: int | None = None
        self._pid = -1

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # a forked worker opens its own
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_fd": None, "_pid": -1}

    def __len__(self) -> int:
        return self.count

    def rows(self, positions: np.ndarray) -> torch.Tensor:
        out = np.empty((len(positions), self.side, self.side, 3), dtype=np.uint8)
        if len(positions) and (positions.min() < 0 or positions.max() >= self.count):
            raise IndexError(f"{self.path}: index out of range for {self.count} images")
        fd = self._file()
        i = 0
        while i < len(positions):  # one read per run of consecutive positions
            j = i + 1
            while j < len(positions) and positions[j] == positions[j - 1] + 1:
                j += 1
            data = os.pread(fd, (j - i) * self.row_bytes, int(positions[i]) * self.row_bytes)
            out[i:j] = np.frombuffer(data, dtype=np.uint8).reshape(j - i, self.side, self.side, 3)
            i = j
        return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()

    def has_colour(self) -> bool:
        return self.colour


class ConcatStore(ImageStore):
    """Several stores end to end (e.g. DANN's target pool: unlabeled then labeled)."""

    def __init__(self, parts: Sequence[ImageStore]) -> None:
        self.parts = [p for p in parts if len(p)]
        self.side = parts[0].side if parts else 0
        self.offsets = np.cumsum([0, *(len(p) for p in self.parts)])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def rows(self, positions: np.ndarray) -> torch.Tensor:
        out = torch.empty((len(positions), 3, self.side, self.side), dtype=torch.uint8)
        owner = np.searchsorted(self.offsets, positions, side="right") - 1
        for k, part in enumerate(self.parts):
            mask = owner == k
            if mask.any():
                out[torch.from_numpy(np.flatnonzero(mask))] = part.rows(positions[mask] - self.offsets[k])
        return out

    def has_colour(self) -> bool:
        return any(p.has_colour() for p in self.parts)


def concat(parts: Sequence[ImageStore]) -> ImageStore:
    if all(isinstance(p, TensorStore) for p in parts):
        return TensorStore(torch.cat([p.images for p in parts]))  # type: ignore[attr-defined]
    return ConcatStore(parts)


class DecodedCache:
    """Raw uint8 files of decoded images, keyed by the files' sha256s, the side, the resize filter and
    the alpha background (v2: EXIF orientation applied, transparency on the background)."""

    CHUNK = 512  # images decoded per write: bounds the memory a build needs

    def __init__(self, folder: str | Path, workers: int = 0) -> None:
        self.folder, self.workers = Path(folder), workers  # workers: processes that decode a missing entry

    def key(self, hashes: Sequence[str], side: int, interpolation: str, background: Sequence[int]) -> str:
        digest = hashlib.sha256(f"decoded-v2:{side}:{interpolation}:{','.join(map(str, background))}\n".encode())
        digest.update("\n".join(hashes).encode())
        return digest.hexdigest()

    def store(
        self,
        hashes: Sequence[str],
        side: int,
        interpolation: str,
        background: Sequence[int],
        blocks: Callable[[int], Iterable[np.ndarray]],
        progress: Callable[[int], None] | None = None,
    ) -> FileStore:
        """The cached images; a missing entry is built from ``blocks(CHUNK)``: the images in order,
        ``(n, S, S, 3)`` uint8 a block of at most CHUNK at a time."""
        key = self.key(hashes, side, interpolation, background)
        data, meta = self.folder / f"{key}.u8", self.folder / f"{key}.json"
        expected = len(hashes) * side * side * 3
        if meta.exists() and data.exists() and data.stat().st_size == expected:
            try:
                info = json.loads(meta.read_text())
                if info.get("count") == len(hashes) and info.get("side") == side:
                    if progress:
                        progress(len(hashes))
                    return FileStore(data, len(hashes), side, bool(info["colour"]))
            except (json.JSONDecodeError, KeyError, TypeError):
                log.warning("%s: unreadable cache entry; decoding again", meta)
        self.folder.mkdir(parents=True, exist_ok=True)
        colour = False

        def write_data(partial: Path) -> None:
            nonlocal colour
            with partial.open("wb") as out:
                for block in blocks(self.CHUNK):
                    colour = colour or bool(
                        (block[..., 0] != block[..., 1]).any() or (block[..., 1] != block[..., 2]).any()
                    )
                    out.write(block.tobytes())
                    if progress:
                        progress(len(block))

        # The data first: a meta file only ever describes a whole data file. A failed write (a full
        # disk, a stop) leaves no partial file behind, and says which file it could not write.
        write_atomic(data, write_data)
        write_text(meta, json.dumps({"count": len(hashes), "side": side, "colour": colour}))
        return FileStore(data, len(hashes), side, colour)
