"""Worker processes decode and read ahead; what they hand over is what the calling process would read."""

import numpy as np
import pytest
import torch

from autotransfer.io.data import FileDecoder, domain_rows, load_images, read_manifest
from autotransfer.io.store import DecodedCache, TensorStore
from autotransfer.io.workers import PrefetchStore, decode_blocks, prefetching
from autotransfer.stages.pipeline import VALIDATE
from stage_helpers import tiny_params


@pytest.fixture
def rows(data_root, tmp_path):
    params = tiny_params(data_root, tmp_path)
    VALIDATE.run(params, progress=False)
    return domain_rows(read_manifest(params.reports.dir), "tgt", ("train", "val", "test"))


def test_parallel_decoding_keeps_the_order_and_the_pixels(rows):
    decode = FileDecoder(tuple(rows["path"]), 24, "bicubic")
    alone = np.concatenate(list(decode_blocks(decode, len(rows), 4, workers=0)))
    blocks = list(decode_blocks(decode, len(rows), 4, workers=2))
    assert [len(b) for b in blocks] == [4] * (len(rows) // 4) + ([len(rows) % 4] if len(rows) % 4 else [])
    assert np.array_equal(np.concatenate(blocks), alone)
    assert np.array_equal(alone[3], decode(3))


def test_the_cache_built_by_workers_is_byte_identical(rows, tmp_path, monkeypatch):
    monkeypatch.setattr(DecodedCache, "CHUNK", 4)  # several blocks, so the workers really share the build
    alone = load_images(rows, ("a", "b"), 24, cache=DecodedCache(tmp_path / "one")).images[:]
    parallel = load_images(rows, ("a", "b"), 24, cache=DecodedCache(tmp_path / "two", workers=2)).images[:]
    assert torch.equal(alone, parallel)


def test_announced_batches_come_from_the_workers_and_any_other_read_from_the_store(rows, tmp_path):
    store = load_images(rows, ("a", "b"), 24, cache=DecodedCache(tmp_path / "c")).images
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randperm(len(store), generator=generator)[:5] for _ in range(4)]
    with prefetching(store, 2, 2, pin=False) as ahead:
        assert isinstance(ahead, PrefetchStore)
        for _epoch in range(2):  # persistent workers: a second epoch reuses them
            ahead.announce(batches)
            assert torch.equal(ahead[torch.tensor([0, 1])], store[torch.tensor([0, 1])])  # not announced
            for batch in batches:
                assert torch.equal(ahead[batch], store[batch])
        ahead.announce(batches)  # an epoch cut short (early stopping), then the next announced
        assert torch.equal(ahead[batches[0]], store[batches[0]])
        ahead.announce(batches[1:])
        assert torch.equal(ahead[batches[1]], store[batches[1]])


def test_in_memory_stores_and_zero_workers_are_read_directly(rows, tmp_path):
    memory = load_images(rows, ("a", "b"), 24).images
    assert isinstance(memory, TensorStore)
    with prefetching(memory, 2, 2, pin=False) as ahead:
        assert ahead is memory
    cached = load_images(rows, ("a", "b"), 24, cache=DecodedCache(tmp_path / "c")).images
    with prefetching(cached, 0, 2, pin=False) as ahead:
        assert ahead is cached
