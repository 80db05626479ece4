import json

import pytest

from autotransfer.stages.pipeline import PRETRAIN, SIMILARITY, VALIDATE
from conftest import make_domain
from stage_helpers import tiny_params


@pytest.fixture
def pretrained(data_root, tmp_path):
    params = tiny_params(data_root, tmp_path)
    VALIDATE.run(params, progress=False)
    PRETRAIN.run(params, progress=False)
    return params


def test_report_has_every_measure_with_its_sample_size_and_cost(pretrained, tmp_path):
    # when similarity is measured on the tiny domains
    report = SIMILARITY.run(pretrained, progress=False).to_json()
    # then the written report has each measure with its sample sizes and seconds
    assert json.loads((tmp_path / "reports/similarity.json").read_text()) == report
    domain = report["domain"]
    assert 0 <= domain["pad"]["pad"] <= 2 and domain["pad"]["n_per_domain"] == 12
    assert domain["mmd2_rbf"]["n_source"] == 12 and domain["frechet"]["n_per_domain"] == 12
    assert all(entry["seconds"] >= 0 for entry in domain.values())
    for name in ("logme", "probe_accuracy"):
        entry = report["transferability"][name]
        assert entry["gain"] == pytest.approx(entry["pretrained"] - entry["random_init"])
        assert entry["n"] == 16 and entry["seconds"] >= 0
    # and LogME says which evidence it is, so nobody compares it with the reference code's scores
    assert "thuml/LogME" in report["transferability"]["logme"]["method"]
    assert report["zero_shot"]["n"] == 16 and 0 <= report["zero_shot"]["value"] <= 1
    assert report["samples"] == {"source": 12, "target": 12, "labeled_target": 16, "target_classes": ["a", "b"]}


def test_second_run_hits_the_feature_cache(pretrained):
    first = SIMILARITY.run(pretrained, progress=False).to_json()
    second = SIMILARITY.run(pretrained, progress=False).to_json()
    assert first["cost"]["cache_misses"] > 0
    lookups = first["cost"]["cache_misses"] + first["cost"]["cache_hits"]
    assert second["cost"]["cache_misses"] == 0 and second["cost"]["cache_hits"] == lookups
    assert second["domain"]["pad"]["pad"] == first["domain"]["pad"]["pad"]


def test_labels_beyond_the_cap_and_the_test_split_are_not_used(data_root, tmp_path):
    params = tiny_params(data_root, tmp_path, data={"labeled_per_class": 3})
    VALIDATE.run(params, progress=False)
    PRETRAIN.run(params, progress=False)
    report = SIMILARITY.run(params, progress=False).to_json()
    assert report["samples"]["labeled_target"] == 6
    # the unlabeled (capped-away) target images still count for the domain distance
    assert report["samples"]["target"] == 12  # the source's 12, more than the 6 labeled


def test_zero_shot_needs_the_target_classes_among_the_source(tmp_path):
    root = tmp_path / "data"
    make_domain(root, "src", seed=1)
    make_domain(root, "tgt", classes=("a", "z"), seed=2)
    params = tiny_params(root, tmp_path)
    VALIDATE.run(params, progress=False)
    PRETRAIN.run(params, progress=False)
    zero_shot = SIMILARITY.run(params, progress=False).to_json()["zero_shot"]
    assert zero_shot["value"] is None and "['z']" in zero_shot["reason"]


def test_without_labels_transferability_says_why(data_root, tmp_path):
    params = tiny_params(data_root, tmp_path, data={"labeled_per_class": 0})
    VALIDATE.run(params, progress=False)
    PRETRAIN.run(params, progress=False)
    report = SIMILARITY.run(params, progress=False).to_json()
    assert report["transferability"]["logme"]["value"] is None
    assert "too few" in report["transferability"]["logme"]["reason"]
    assert report["zero_shot"]["value"] is None


def test_both_domains_are_drawn_at_random_to_the_same_size(tmp_path):
    from PIL import Image

    # given a target whose train images are the source's own pixels (re-encoded) and whose val
    # images look nothing like them, and a source smaller than the target pool
    root = tmp_path / "data"
    source = make_domain(root, "src", n_val=1, n_test=1, seed=1)
    for path in sorted((source / "train").rglob("*.png")):
        copy = root / "tgt" / path.relative_to(source)
        copy.parent.mkdir(parents=True, exist_ok=True)
        Image.open(path).save(copy, compress_level=1)  # same pixels, other bytes
    for split, n in (("val", 6), ("test", 1)):
        for label, shade in (("a", 250), ("b", 5)):
            for i in range(n):
                (root / "tgt" / split / label).mkdir(parents=True, exist_ok=True)
                Image.new("L", (16, 16), shade + i).save(root / "tgt" / split / label / f"{i:02d}.png")
    params = tiny_params(root, tmp_path, similarity={"n_per_domain": 100})
    VALIDATE.run(params, progress=False)
    PRETRAIN.run(params, progress=False)
    report = SIMILARITY.run(params, progress=False).to_json()
    # then both domains are compared at the source's 12 images, the target's drawn from its whole
    # pool (not its first 12 paths, which are the source's own pixels and would read as no shift)
    assert report["samples"]["source"] == report["samples"]["target"] == 12
    assert report["domain"]["frechet"]["n_per_domain"] == 12
    # (on the first 12 paths: Fréchet exactly 0 and MMD² below 0, identical pixels)
    assert report["domain"]["frechet"]["value"] > 1e-3 and report["domain"]["mmd2_rbf"]["mmd2"] > 0
