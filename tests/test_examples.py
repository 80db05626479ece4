"""examples/: what the README's quickstart points a user without photos to."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from PIL import Image

from autotransfer.stages.validate import validate
from conftest import params_for

REPO = Path(__file__).resolve().parents[1]


def test_the_photo_folder_is_a_users_folder_that_validates_without_a_source(tmp_path):
    spec = importlib.util.spec_from_file_location("photo_folder", REPO / "examples/photo_folder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    photos = tmp_path / "photos"
    counts = module.build(photos)
    # one folder per class, nothing else; some photos turned with an EXIF tag, some transparent
    assert sorted(p.name for p in photos.iterdir()) == sorted(counts) and set(counts.values()) == {40}
    files = sorted(photos.rglob("*.*"))
    assert any(Image.open(p).getexif().get(0x0112) == 6 for p in files if p.suffix == ".jpg")
    assert any(Image.open(p).mode == "RGBA" for p in files if p.suffix == ".png")
    # and it validates as a target with no source, split by content
    result = validate(params_for(tmp_path, data={"source": None, "target": str(photos)},
                                 validation={"state_dir": None}), reports_dir=tmp_path / "reports", progress=False)
    assert result.success and set(result.manifest["split_by"]) == {"content"}
