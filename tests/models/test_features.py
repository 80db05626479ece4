import numpy as np
import pytest
import torch

from autotransfer.models.backbones import TransferModel
from autotransfer.io.data import ImageSet, Normalization
from autotransfer.models.features import FeatureCache, state_hash

NORM = Normalization((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def images(n=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    return ImageSet(pixels, torch.zeros(n, dtype=torch.long), ("a",),
                    tuple(f"{seed}-{i}" for i in range(n)), tuple(f"p{i}" for i in range(n)))


def counting(model):
    calls = []
    model.body.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_second_extraction_does_no_forward_pass(tmp_path):
    # given a model whose forward calls are counted and an empty cache
    torch.manual_seed(0)
    model = TransferModel("small_cnn", 2, 32)
    calls = counting(model)
    cache = FeatureCache(tmp_path)
    # when the same images are extracted twice
    first = cache.features(model.body, "small_cnn", images(), NORM, batch_size=4)
    n_forward = len(calls)
    second = FeatureCache(tmp_path).features(model.body, "small_cnn", images(), NORM, batch_size=4)
    # then the first computed (3 batches), the second read the cache: same values, no forward
    assert n_forward == 3 and len(calls) == 3
    np.testing.assert_array_equal(first, second)
    assert first.shape == (10, 100)


def test_features_equal_a_direct_eval_forward(tmp_path):
    torch.manual_seed(0)
    model = TransferModel("small_cnn", 2, 32).eval()
    batch = images(4)
    got = FeatureCache(tmp_path).features(model.body, "small_cnn", batch, NORM)
    with torch.no_grad():
        np.testing.assert_allclose(got, model.body(NORM(batch.images[:])).numpy(), rtol=1e-6)


@pytest.mark.parametrize("change", ["weights", "images", "transform"])
def test_any_input_change_is_a_miss(tmp_path, change):
    torch.manual_seed(0)
    model = TransferModel("small_cnn", 2, 32)
    cache = FeatureCache(tmp_path)
    cache.features(model.body, "small_cnn", images(), NORM)
    norm, batch = NORM, images()
    if change == "weights":
        with torch.no_grad():
            model.body.conv1[0].weight.add_(0.01)
    elif change == "images":
        batch = images(seed=1)
    else:
        norm = Normalization((0.4, 0.5, 0.5), (0.25, 0.25, 0.25))
    cache.features(model.body, "small_cnn", batch, norm)
    assert cache.misses == 2 and cache.hits == 0


def test_corrupted_entry_is_recomputed_not_used(tmp_path):
    torch.manual_seed(0)
    model = TransferModel("small_cnn", 2, 32)
    cache = FeatureCache(tmp_path)
    good = cache.features(model.body, "small_cnn", images(), NORM)
    [entry] = list(tmp_path.glob("*.safetensors"))
    entry.write_bytes(entry.read_bytes()[:40])  # truncated
    again = FeatureCache(tmp_path)
    np.testing.assert_array_equal(again.features(model.body, "small_cnn", images(), NORM), good)
    assert again.misses == 1


def test_an_entry_whose_values_changed_inside_a_valid_file_is_recomputed_not_used(tmp_path):
    torch.manual_seed(0)
    model = TransferModel("small_cnn", 2, 32)
    good = FeatureCache(tmp_path).features(model.body, "small_cnn", images(), NORM)
    [entry] = list(tmp_path.glob("*.safetensors"))
    data = bytearray(entry.read_bytes())
    data[-1] ^= 0x40  # one bit of the last feature value: the file still parses, the shape still fits
    entry.write_bytes(bytes(data))
    from safetensors.torch import load_file

    assert not np.array_equal(load_file(str(entry))["features"].numpy(), good)  # a changed value, readable
    again = FeatureCache(tmp_path)
    np.testing.assert_array_equal(again.features(model.body, "small_cnn", images(), NORM), good)
    assert again.misses == 1 and again.hits == 0


def test_state_hash_sees_buffers_and_values():
    torch.manual_seed(0)
    a = TransferModel("small_cnn", 2, 32)
    before = state_hash(a.body)
    a.body.conv1[1].running_mean += 1  # a BatchNorm buffer, not a parameter
    assert state_hash(a.body) != before
