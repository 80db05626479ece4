"""The evaluate stage's outputs at scale (the pipeline tests run it on small targets)."""

import numpy as np
from PIL import Image

from autotransfer.stages.evaluate import CONFUSION_MAX_INCHES, _confusion_plot


def test_a_thousand_class_confusion_plot_stays_a_bounded_image(tmp_path):
    # given a 1,000-class target (at 0.45 in per class: a 45,000 px square, about 8 GB of pixels)
    rng = np.random.default_rng(0)
    classes = tuple(f"class {i:04d}" for i in range(1000))
    truth = np.array(classes, dtype=object)[rng.integers(0, 1000, 5000)]
    predicted = np.array(classes, dtype=object)[rng.integers(0, 1000, 5000)]
    # when plotted, then the image is at most CONFUSION_MAX_INCHES at 100 dpi on each side
    path = _confusion_plot(truth, predicted, classes, tmp_path / "confusion_matrix.png")
    with Image.open(path) as image:
        assert max(image.size) <= CONFUSION_MAX_INCHES * 100
    # and a small target keeps its labelled matrix at 0.45 in per class
    small = ("a", "b", "c")
    path = _confusion_plot(np.array(["a", "b", "c"]), np.array(["a", "c", "c"]), small, tmp_path / "small.png")
    with Image.open(path) as image:
        assert image.size == (235, 235)
