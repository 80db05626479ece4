"""Decoded images on disk, read per batch: the same pixels as in memory, decoded once per content."""

import numpy as np
import pytest
import torch

from autotransfer.io.data import domain_rows, load_images, read_manifest
from autotransfer.io.store import ConcatStore, DecodedCache, FileStore, TensorStore, concat
from autotransfer.stages.pipeline import VALIDATE
from stage_helpers import tiny_params


@pytest.fixture
def rows(data_root, tmp_path):
    params = tiny_params(data_root, tmp_path)
    VALIDATE.run(params, progress=False)
    return domain_rows(read_manifest(params.reports.dir), "tgt", ("train", "val", "test"))


def test_the_disk_cache_serves_exactly_what_decoding_into_memory_gives(rows, tmp_path):
    memory = load_images(rows, ("a", "b"), 24, interpolation="bicubic")
    cached = load_images(rows, ("a", "b"), 24, interpolation="bicubic", cache=DecodedCache(tmp_path / "c"))
    assert isinstance(memory.images, TensorStore) and isinstance(cached.images, FileStore)
    assert cached.images.shape == memory.images.shape and torch.equal(cached.labels, memory.labels)
    # whole, sliced, and gathered in any order, with repeats: the same bytes
    assert torch.equal(cached.images[:], memory.images[:])
    assert torch.equal(cached.images[2:7], memory.images[2:7])
    index = torch.tensor([5, 0, 1, 2, 9, 9, 3])
    assert torch.equal(cached.images[index], memory.images[index])
    assert cached.images.has_colour() == memory.images.has_colour()
    with pytest.raises(IndexError):
        cached.images[torch.tensor([len(rows)])]


def test_a_second_load_decodes_nothing_and_another_size_filter_or_background_is_another_entry(rows, tmp_path):
    cache = DecodedCache(tmp_path / "c")
    decoded: list[int] = []
    original = cache.store

    def counting(hashes, side, interpolation, background, blocks, progress=None):
        def spy(size):
            for block in blocks(size):
                decoded.extend(range(len(block)))
                yield block

        return original(hashes, side, interpolation, background, spy, progress)

    cache.store = counting
    load_images(rows, ("a", "b"), 24, cache=cache)
    assert len(decoded) == len(rows)
    load_images(rows, ("a", "b"), 24, cache=cache)
    assert len(decoded) == len(rows)  # nothing decoded again
    load_images(rows, ("a", "b"), 24, interpolation="nearest", cache=cache)
    load_images(rows, ("a", "b"), 20, cache=cache)
    load_images(rows, ("a", "b"), 20, cache=cache, background=(0, 0, 0))  # transparency on another colour
    assert len(decoded) == 4 * len(rows)
    assert len(list((tmp_path / "c").glob("*.u8"))) == 4 and not list((tmp_path / "c").glob("*.partial"))


def test_a_truncated_cache_entry_is_decoded_again_not_read(rows, tmp_path):
    cache = DecodedCache(tmp_path / "c")
    good = load_images(rows, ("a", "b"), 24, cache=cache).images[:]
    (entry,) = (tmp_path / "c").glob("*.u8")
    entry.write_bytes(entry.read_bytes()[:100])
    assert torch.equal(load_images(rows, ("a", "b"), 24, cache=cache).images[:], good)


def test_a_full_disk_while_caching_names_the_file_and_leaves_no_partial_entry(rows, tmp_path, monkeypatch):
    import errno
    import io

    from autotransfer.errors import OutputError

    # given a disk that fills up half-way through writing the cache entry (a fault injected)
    class FullDisk(io.FileIO):
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    real_open = type(tmp_path).open
    monkeypatch.setattr(type(tmp_path), "open", lambda self, mode="r", *a, **k: FullDisk(self, "wb")
                        if mode == "wb" else real_open(self, mode, *a, **k))
    cache = DecodedCache(tmp_path / "c")
    # when the images are loaded, then the error names the cache file and nothing half-written is left
    with pytest.raises(OutputError, match=r"cannot write .*/c/\w+\.u8: No space left on device"):
        load_images(rows, ("a", "b"), 24, cache=cache)
    assert list((tmp_path / "c").iterdir()) == []
    # and once there is room, the entry is built whole
    monkeypatch.undo()
    assert len(load_images(rows, ("a", "b"), 24, cache=cache).images) == len(rows)


def test_concatenated_stores_index_across_their_parts(rows, tmp_path):
    cached = load_images(rows, ("a", "b"), 24, cache=DecodedCache(tmp_path / "c")).images
    memory = TensorStore(torch.arange(2 * 3 * 24 * 24, dtype=torch.int32).remainder(251).to(torch.uint8).view(2, 3, 24, 24))
    both = concat([cached, memory])
    assert isinstance(both, ConcatStore) and len(both) == len(cached) + 2
    index = torch.tensor([len(cached) + 1, 0, len(cached), 3])
    expected = torch.stack([memory[1], cached[0:1][0], memory[0], cached[3:4][0]])
    assert torch.equal(both[index], expected)
    assert isinstance(concat([memory, memory]), TensorStore)


def test_training_on_the_disk_cache_ends_bit_identical_to_training_in_memory(data_root, tmp_path):
    from autotransfer.engine.loop import fit
    from autotransfer.io.data import load_train_data
    from autotransfer.models.weights import backbone_input
    from autotransfer.transfer.strategies import Candidate
    from stage_helpers import plan_ready

    results = {}
    runs = (("memory", None, 0), ("disk", str(tmp_path / "decoded-run"), 0),
            ("disk, 2 workers", str(tmp_path / "decoded-workers"), 2))
    for name, cache, workers in runs:
        params = plan_ready(tiny_params(data_root, tmp_path / name, data={"decoded_cache": cache, "workers": workers},
                                        train={"epochs": 2, "batch_size": 4}))
        data = load_train_data(params, True, backbone_input(params), progress=False)
        assert isinstance(data.train.images, TensorStore if cache is None else FileStore)
        results[name] = fit(params, Candidate("dann"), data, tmp_path / name / "runs", 2, False)
    memory = results["memory"].model.state_dict()
    for name in ("disk", "disk, 2 workers"):  # decoded and read ahead by worker processes: the same run
        other = results[name].model.state_dict()
        assert all(torch.equal(memory[k], other[k]) for k in memory), name
        assert np.isclose(results["memory"].history[-1]["train_loss"], results[name].history[-1]["train_loss"])
