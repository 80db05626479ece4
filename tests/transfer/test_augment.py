import torch

from autotransfer.transfer.augment import Augmentation, augment, color, crop_flip, geometric


def batch(n=8, seed=0):
    return torch.randint(0, 256, (n, 3, 16, 16), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_same_generator_state_gives_the_same_draws():
    x = batch()
    a = augment(x, torch.Generator().manual_seed(3), Augmentation(True, True))
    b = augment(x, torch.Generator().manual_seed(3), Augmentation(True, True))
    assert torch.equal(a, b) and a.dtype == torch.uint8 and a.shape == x.shape
    assert not torch.equal(a, augment(x, torch.Generator().manual_seed(4), Augmentation(True, True)))


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
    assert torch.equal(augment(x, torch.Generator().manual_seed(0), Augmentation(False, False)), x)


def test_flip_gives_each_image_or_its_mirror_and_both_happen():
    x = batch(n=64)
    out = crop_flip(x, torch.Generator().manual_seed(0), crop=False, flip=True)
    same = [torch.equal(o, i) for o, i in zip(out, x)]
    mirrored = [torch.equal(o, i.flip(-1)) for o, i in zip(out, x)]
    assert all(s or m for s, m in zip(same, mirrored)) and any(same) and any(mirrored)


def test_random_resized_crop_zooms_into_a_region_and_a_full_crop_is_the_identity():
    x = batch(n=16)
    full = crop_flip(x, torch.Generator().manual_seed(0), crop=True, flip=False, area=(1.0, 1.0), ratio=(1.0, 1.0))
    assert torch.equal(full, x)
    # a smooth ramp: a crop of part of it spans a narrower range of values than the whole
    ramp = torch.linspace(0, 255, 32).round().to(torch.uint8).view(1, 1, 1, 32).expand(16, 3, 32, 32).contiguous()
    cropped = crop_flip(ramp, torch.Generator().manual_seed(1), crop=True, flip=False, area=(0.25, 0.5))
    spans = (cropped.amax(dim=(1, 2, 3)).int() - cropped.amin(dim=(1, 2, 3)).int()).float()
    assert (spans < 0.8 * 255).all() and len(set(spans.tolist())) > 1  # zoomed in, by a draw per image
    again = crop_flip(ramp, torch.Generator().manual_seed(1), crop=True, flip=False, area=(0.25, 0.5))
    assert torch.equal(cropped, again)


def test_crop_and_flip_are_chosen_per_strategy_in_params():
    from autotransfer.config import load_params
    from autotransfer.transfer.strategies import Candidate, make_strategy

    params = load_params(None, ["train.augment_per_strategy={finetune_all: {crop: true, flip: true}}"])
    assert make_strategy(params, Candidate("finetune_all")).augmentation(False) == Augmentation(True, False, True, True)
    assert make_strategy(params, Candidate("progressive")).augmentation(False) == Augmentation(True, False)
