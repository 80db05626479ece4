import torch

from autotransfer.transfer.augment import augment, color, geometric


def batch(n=8, seed=0):
    return torch.randint(0, 256, (n, 3, 16, 16), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_same_generator_state_gives_the_same_draws():
    x = batch()
    a = augment(x, torch.Generator().manual_seed(3), True, True)
    b = augment(x, torch.Generator().manual_seed(3), True, True)
    assert torch.equal(a, b) and a.dtype == torch.uint8 and a.shape == x.shape
    assert not torch.equal(a, augment(x, torch.Generator().manual_seed(4), True, True))


def test_each_image_gets_its_own_draw():
    x = batch(1).repeat(6, 1, 1, 1)
    out = geometric(x, torch.Generator().manual_seed(0))
    assert len({tuple(img.flatten().tolist()) for img in out}) == 6


def test_geometric_keeps_a_centred_blob_roughly_in_place():
    x = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
    x[:, :, 12:20, 12:20] = 255
    out = geometric(x, torch.Generator().manual_seed(0)).float()
    assert (out[:, :, 8:24, 8:24].sum((1, 2, 3)) > 0.8 * out.sum((1, 2, 3))).all()


def test_color_can_invert_and_shuffle_but_keeps_the_range():
    x = batch(64)
    out = color(x, torch.Generator().manual_seed(1), p_invert=1.0, p_gray=0.0, brightness=0.0, contrast=0.0)
    # every channel inverted, then (possibly) permuted: the multiset of channel sums is 255·HW − original
    original = x.float().sum((2, 3)).sort(1).values
    inverted = (255 * 16 * 16 - out.float().sum((2, 3))).sort(1).values
    assert torch.allclose(original, inverted)


def test_off_means_untouched():
    x = batch()
    assert torch.equal(augment(x, torch.Generator().manual_seed(0), False, False), x)
