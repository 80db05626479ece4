import numpy as np
import pytest
from PIL import Image

from autotransfer.io.images import inspect_image, load_rgb, to_rgb


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "1", "CMYK"])
def test_every_common_mode_loads_as_8bit_rgb(tmp_path, mode):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8))
    path = tmp_path / f"x_{mode}.{'jpg' if mode == 'CMYK' else 'png'}"
    rgb.convert(mode).save(path)
    image = load_rgb(path)
    assert image.mode == "RGB" and image.size == (10, 12)


def test_16bit_is_rescaled_not_clipped(tmp_path):
    # given a 16-bit ramp from 0 to 65535
    ramp = np.linspace(0, 65535, 16 * 16).astype(np.uint16).reshape(16, 16)
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    # when loaded, then it spans the 8-bit range instead of saturating at 255
    pixels = np.asarray(load_rgb(path))
    assert pixels.min() == 0 and pixels.max() == 255
    assert len(np.unique(pixels[..., 0])) > 100


def test_transparency_is_laid_on_the_background_white_unless_told():
    rgba = Image.new("RGBA", (2, 2), (0, 0, 0, 0))  # fully transparent black
    assert np.asarray(to_rgb(rgba)).min() == 255
    assert np.asarray(to_rgb(rgba, (10, 20, 30)))[0, 0].tolist() == [10, 20, 30]
    half = Image.new("LA", (2, 2), (0, 128))  # half-transparent black on white: mid grey
    assert 120 <= np.asarray(to_rgb(half))[0, 0, 0] <= 135


@pytest.mark.parametrize("orientation, turn", [(3, 2), (6, -1), (8, 1)])  # 180°, 90° clockwise, 90° counter-clockwise
def test_a_photo_is_read_upright_by_its_exif_orientation(tmp_path, orientation, turn):
    # given a picture with a distinct top-left corner, stored turned, and the EXIF tag that says how
    upright = np.zeros((30, 20, 3), dtype=np.uint8)
    upright[:6, :4] = (255, 0, 0)
    stored = np.rot90(upright, k=-turn).copy()  # what a camera writes before tagging it
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "photo.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    # then it reads as the upright picture
    read = np.asarray(load_rgb(path))
    assert read.shape == upright.shape
    assert read[:6, :4, 0].mean() > 200 and read[-6:, -4:, 0].mean() < 50


def test_inspect_reports_size_mode_and_format(tmp_path):
    path = tmp_path / "a.png"
    Image.new("L", (7, 5)).save(path)
    info = inspect_image(path, max_pixels=100)
    assert (info.width, info.height, info.mode, info.format, info.readable) == (7, 5, "L", "PNG", True)


def test_inspect_refuses_by_pixel_count_before_decoding(tmp_path):
    path = tmp_path / "a.png"
    Image.new("L", (20, 20)).save(path)
    info = inspect_image(path, max_pixels=399)
    assert not info.readable and "400 pixels" in info.error and "validation.max_pixels" in info.error


def test_non_square_images_keep_their_aspect_and_lose_only_the_edges():
    import numpy as np
    from PIL import Image

    from autotransfer.io.images import resize_square

    # given a landscape photo, left half black and right half white, with a red centre column
    pixels = np.zeros((40, 120, 3), dtype=np.uint8)
    pixels[:, 60:] = 255
    pixels[:, 58:62] = (255, 0, 0)
    out = np.asarray(resize_square(Image.fromarray(pixels), 20, "bilinear"))
    # then it is the centre 40x40 scaled to 20x20: the red column in the middle, not squashed away
    assert out.shape == (20, 20, 3)
    assert out[:, 9:11, 0].min() > 150 and out[:, 9:11, 1].max() < 150
    assert out[:, :5].max() < 30 and out[:, -5:].min() > 225
    # and the same as resizing the whole image by the same factor and cropping the centre
    reference = Image.fromarray(pixels).resize((60, 20), Image.Resampling.BILINEAR).crop((20, 0, 40, 20))
    assert np.abs(out.astype(int) - np.asarray(reference).astype(int)).max() <= 1
