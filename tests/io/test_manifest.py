import pandas as pd

from autotransfer.io.manifest import Domain, assign_usage, scan
from conftest import make_domain


def scan_root(root):
    return scan([Domain("src", "source", root / "src", root), Domain("tgt", "target", root / "tgt", root)],
                max_pixels=10**6, progress=False)


def test_manifest_has_the_documented_columns_and_one_row_per_file(data_root):
    files = scan_root(data_root).files
    assert list(files.columns) == ["path", "domain", "role", "split", "split_by", "label", "width", "height",
                                   "mode", "format", "bytes", "sha256", "readable", "error"]
    assert len(files) == 2 * 2 * (6 + 2 + 2)
    assert files["readable"].all() and files["sha256"].str.len().eq(64).all()


def test_folders_table_counts_readable_images(data_root):
    (data_root / "tgt/train/a/bad.png").write_text("x")
    folders = scan_root(data_root).folders.set_index("folder")
    row = folders.loc[(data_root / "tgt/train/a").as_posix()]
    assert (row["n_files"], row["n_readable"]) == (7, 6)


def test_no_cap_uses_splits_as_they_are(data_root):
    files = scan_root(data_root).files
    usage = assign_usage(files, "tgt", None, seed=0)
    assert (usage == files["split"]).all()


def test_cap_covers_train_and_val_and_never_touches_test(tmp_path):
    # given a target with 20 train and 5 val images per class
    root = tmp_path / "data"
    make_domain(root, "src", seed=1)
    make_domain(root, "tgt", n_train=20, n_val=5, n_test=4, seed=2)
    files = scan_root(root).files
    # when capped at 10 labeled images per class
    usage = assign_usage(files, "tgt", 10, seed=0)
    target = files.assign(usage=usage)[files["domain"] == "tgt"]
    per_class = target[target["usage"].isin(["train", "val"])].groupby(["label", "usage"]).size().unstack()
    # then each class keeps exactly 10 labels, 2 of them val (5/25 of 10), the rest become unlabeled
    assert per_class.sum(axis=1).tolist() == [10, 10]
    assert per_class["val"].tolist() == [2, 2]
    assert (target["usage"] == "unlabeled").sum() == 2 * 15
    # the test split is untouched, and the source is not capped
    assert (target.loc[target["split"] == "test", "usage"] == "test").all()
    source = files.assign(usage=usage)[files["domain"] == "src"]
    assert (source["usage"] == source["split"]).all()


def test_cap_is_deterministic_and_seeded(data_root):
    files = scan_root(data_root).files
    first = assign_usage(files, "tgt", 3, seed=0)
    assert first.equals(assign_usage(files, "tgt", 3, seed=0))
    differs = [not first.equals(assign_usage(files, "tgt", 3, seed=s)) for s in range(1, 6)]
    assert any(differs)


def test_cap_zero_leaves_no_labeled_target(data_root):
    files = scan_root(data_root).files
    usage = assign_usage(files, "tgt", 0, seed=0)
    target = usage[files["domain"] == "tgt"]
    assert set(target) == {"unlabeled", "test"}


def test_unreadable_files_are_unused(data_root):
    (data_root / "tgt/train/a/bad.png").write_text("x")
    files = scan_root(data_root).files
    usage = assign_usage(files, "tgt", None, seed=0)
    assert usage[files["path"].str.endswith("bad.png")].tolist() == ["unused"]
    assert isinstance(usage, pd.Series)


def test_a_file_that_vanishes_while_scanned_is_a_named_row(data_root, monkeypatch):
    from autotransfer.io import manifest

    # given a file deleted after the walk listed it, just before it is read (a fault injected)
    gone = data_root / "tgt/train/a/01.png"
    read = manifest.sha256_file

    def delete_then_read(path):
        if path == gone:
            gone.unlink()
        return read(path)

    monkeypatch.setattr(manifest, "sha256_file", delete_then_read)
    # when scanned, then its row says so and the others are read
    files = scan_root(data_root).files
    row = files[files["path"] == gone.as_posix()].iloc[0]
    assert not row["readable"] and "changed while scanned" in row["error"]
    assert files["readable"].sum() == len(files) - 1


def test_a_file_gone_since_validate_is_named_when_train_reads_it(data_root, tmp_path):
    import pytest

    from autotransfer.errors import StageInputError
    from autotransfer.io.data import load_train_data
    from autotransfer.models.weights import backbone_input
    from autotransfer.stages.pipeline import VALIDATE
    from stage_helpers import tiny_params

    # given validated data, then one of its images deleted
    params = tiny_params(data_root, tmp_path, data={"decoded_cache": None})
    VALIDATE.run(params, progress=False)
    (data_root / "tgt/train/b/02.png").unlink()
    # when train loads it, then the error names the file and what to do
    with pytest.raises(StageInputError, match=r"tgt/train/b/02.png: could not be read .*rerun it"):
        load_train_data(params, False, backbone_input(params), progress=False)
