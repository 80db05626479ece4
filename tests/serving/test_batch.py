"""Batch prediction: `autotransfer predict PATH… --out predictions.csv` on a real trained model."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from autotransfer.cli import main
from autotransfer.models.weights import load_trained_model
from autotransfer.registry.pyfunc import load_predictor
from autotransfer.serving.batch import Labeled, Unreadable, find_images, predict_files
from autotransfer.serving.predict import classify
from conftest import make_domain
from stage_helpers import plan_ready, tiny_params


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A model trained by the train stage on tiny domains (three classes, so top-3 means something)."""
    from autotransfer.stages.pipeline import TRAIN

    work = tmp_path_factory.mktemp("batch")
    root = work / "data"
    make_domain(root, "src", classes=("a", "b", "c"), seed=1)
    make_domain(root, "tgt", classes=("a", "b", "c"), seed=2)
    params = plan_ready(tiny_params(root, work, train={"epochs": 1, "patience": 0}))
    TRAIN.run(params, progress=False)
    return Path(params.train.out)


@pytest.fixture
def photos(tmp_path) -> Path:
    """A folder tree of 7 images two levels deep, a text file, and one PNG that does not decode."""
    make_domain(tmp_path, "photos", classes=("x", "y"), n_train=2, n_val=1, n_test=0, seed=7)
    (tmp_path / "photos/notes.txt").write_text("not an image")
    (tmp_path / "photos/train/x/zz-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return tmp_path / "photos"


def test_folders_are_searched_recursively_for_images_and_missing_paths_are_named(photos, tmp_path):
    files, missing = find_images([photos, tmp_path / "nowhere"])
    assert len(files) == 7 and all(p.suffix == ".png" for p in files) and files == sorted(files)
    assert [m.path for m in missing] == [tmp_path / "nowhere"]


def test_a_broken_file_costs_its_own_row_not_its_batch(model_dir, photos):
    files, _ = find_images([photos])
    predictor = load_predictor(str(model_dir), None)
    results = predict_files(predictor, files, batch_size=4, top_k=3, progress=False)
    assert [r.path for r in results] == files
    bad = [r for r in results if isinstance(r, Unreadable)]
    assert [r.path.name for r in bad] == ["zz-broken.png"] and "not a readable image" in bad[0].error
    # every other file is labeled exactly as one-by-one classification labels it
    trained = load_trained_model(model_dir)
    good = [r for r in results if isinstance(r, Labeled)]
    one_by_one = [classify(trained, [r.path.read_bytes()], top_k=3)[0] for r in good]
    for batched, single in zip(good, one_by_one):
        assert [lab for lab, _ in batched.prediction.top] == [lab for lab, _ in single.top]
        assert [p for _, p in batched.prediction.top] == pytest.approx([p for _, p in single.top], abs=1e-5)
    for r in good:  # three labels, best first, probabilities of one softmax
        labels, probs = zip(*r.prediction.top)
        assert sorted(labels) == ["a", "b", "c"] and list(probs) == sorted(probs, reverse=True)
        assert sum(probs) == pytest.approx(1.0, abs=1e-5)


def test_predict_writes_a_csv_row_per_file_lists_the_bad_one_and_exits_1(model_dir, photos, tmp_path, capsys):
    out = tmp_path / "out/predictions.csv"
    code = main(["predict", "--model", str(model_dir), "--out", str(out), "--top-k", "2", "--batch-size", "3",
                 "--no-progress", str(photos), str(tmp_path / "missing.png")])
    err = capsys.readouterr().err
    rows = list(csv.DictReader(out.open()))
    assert code == 1
    assert list(rows[0]) == ["path", "label", "probability", "label_2", "probability_2", "error"]
    assert len(rows) == 8  # 7 images found (one broken) + the missing path
    errors = {Path(r["path"]).name: r["error"] for r in rows if r["error"]}
    assert set(errors) == {"zz-broken.png", "missing.png"} and errors["missing.png"] == "no such file or folder"
    labeled = [r for r in rows if not r["error"]]
    assert all(r["label"] in "abc" and r["label_2"] in "abc" and r["label"] != r["label_2"] for r in labeled)
    assert all(float(r["probability"]) >= float(r["probability_2"]) for r in labeled)
    assert "zz-broken.png" in err and "6 of 8 images labeled" in err
    assert not list(out.parent.glob(".*partial"))


def test_predict_on_good_files_exits_0_and_prints_one_line_each(model_dir, photos, capsys):
    good = sorted((photos / "val").rglob("*.png"))
    code = main(["predict", "--model", str(model_dir), "--top-k", "3", *map(str, good)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and len(lines) == len(good) == 2
    cells = lines[0].split("\t")
    assert cells[0] == str(good[0]) and len(cells) == 1 + 2 * 3


def test_predict_with_nothing_to_label_names_the_paths(model_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["predict", "--model", str(model_dir), str(tmp_path / "empty")]) == 1
    assert "no image files in" in capsys.readouterr().err
    assert main(["predict", "--model", str(model_dir), "--top-k", "0", str(tmp_path)]) == 2
    assert "--top-k must be at least 1" in capsys.readouterr().err


def test_postscript_is_never_read_as_an_image(model_dir, tmp_path):
    import io

    from PIL import Image

    from autotransfer.errors import ImageDecodeError
    from autotransfer.io.images import inspect_image

    # given an EPS file (Pillow would hand it to Ghostscript, i.e. run the file's PostScript), named .png
    buffer = io.BytesIO()
    Image.new("RGB", (24, 24), (200, 10, 10)).save(buffer, "EPS")
    eps = tmp_path / "looks-like.png"
    eps.write_bytes(buffer.getvalue())
    # then serving refuses it by name and says which formats it takes, and so does validation
    with pytest.raises(ImageDecodeError, match="looks-like.png: not a readable image .*accepted format .*PNG, JPEG"):
        classify(load_trained_model(model_dir), [eps.read_bytes()], [str(eps)])
    assert "accepted format" in inspect_image(eps, 10**6).error
