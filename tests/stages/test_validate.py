"""The validate stage on real files with real Great Expectations suites, one fault at a time."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from autotransfer.stages.validate import summary_lines, validate
from conftest import make_domain, params_for, write_image


def run(root: Path, tmp_path: Path, **sections):
    result = validate(params_for(root, **sections), reports_dir=tmp_path / "reports", progress=False)
    failed = {c["id"]: c for c in result.report.to_json()["checks"] if not c["success"]}
    console = "\n".join(summary_lines(result.report, max_listed=50))
    return result, failed, console


def offending_items(check: dict) -> list[str]:
    return [o["item"] for o in check["offending"]]


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(path.as_posix().encode())
        if path.is_file() and not path.is_symlink():
            digest.update(path.read_bytes())
            digest.update(str(path.stat().st_mtime_ns).encode())
    return digest.hexdigest()


def test_valid_data_passes_and_writes_both_reports(data_root, tmp_path):
    # given two clean domains
    # when validated
    result, failed, _ = run(data_root, tmp_path)
    # then every check passes and both reports exist, the JSON matching the result
    assert result.success and not failed
    assert json.loads(result.json_path.read_text())["success"] is True
    assert "PASSED" in result.markdown_path.read_text()
    assert (tmp_path / "reports" / "manifest.csv").exists()
    assert result.report.to_json()["domains"]["target"]["images"] == {"train": 12, "val": 4, "test": 4, "unlabeled": 0}


def test_truncated_png_is_named_and_fails(data_root, tmp_path):
    bad = data_root / "tgt/train/a/00.png"
    bad.write_bytes(bad.read_bytes()[:60])
    result, failed, console = run(data_root, tmp_path)
    assert not result.success
    assert offending_items(failed["files_readable"]) == [bad.as_posix()]
    assert bad.as_posix() in console and "truncated" in console


def test_zero_byte_file(data_root, tmp_path):
    bad = data_root / "src/val/b/empty.png"
    bad.write_bytes(b"")
    result, failed, console = run(data_root, tmp_path)
    assert not result.success
    assert offending_items(failed["files_readable"]) == [bad.as_posix()]
    assert "empty file" in console


def test_text_file_named_png(data_root, tmp_path):
    bad = data_root / "tgt/test/b/notes.png"
    bad.write_text("this is not a picture\n")
    _, failed, console = run(data_root, tmp_path)
    assert offending_items(failed["files_readable"]) == [bad.as_posix()]
    assert "unreadable image" in console


def test_non_image_file_in_a_class_folder(data_root, tmp_path):
    bad = data_root / "src/train/a/labels.csv"
    bad.write_text("a,b\n")
    _, failed, console = run(data_root, tmp_path)
    assert offending_items(failed["files_readable"]) == [bad.as_posix()]
    assert "not an image file" in console


def test_empty_class_folder(data_root, tmp_path):
    empty = data_root / "tgt/train/c"
    empty.mkdir()
    _, failed, console = run(data_root, tmp_path)
    assert empty.as_posix() in offending_items(failed["train_images_per_class"])
    # the class also has no val/test images: named there too
    assert (data_root / "tgt/val/c").as_posix() in offending_items(failed["eval_images_per_class"])
    assert empty.as_posix() in console


def test_domain_with_a_single_class(tmp_path):
    root = tmp_path / "data"
    make_domain(root, "src", seed=1)
    make_domain(root, "tgt", classes=("only",), seed=2)
    result, failed, console = run(root, tmp_path)
    assert not result.success
    assert offending_items(failed["target_has_two_classes"]) == [(root / "tgt/train").as_posix()]
    assert "at least 2 classes" in console


def test_class_in_val_and_test_but_not_in_train(data_root, tmp_path):
    extra_val = write_image(data_root / "tgt/val/z/00.png", seed=777)
    extra_test = write_image(data_root / "tgt/test/z/00.png", seed=778)
    _, failed, _ = run(data_root, tmp_path)
    assert offending_items(failed["target_labels_known_in_train"]) == sorted([extra_val.as_posix(), extra_test.as_posix()])
    assert (data_root / "tgt/train/z").as_posix() in offending_items(failed["train_images_per_class"])


def test_same_content_in_train_and_test_is_leakage(data_root, tmp_path):
    original = data_root / "tgt/train/a/01.png"
    copy = data_root / "tgt/test/a/leaked.png"
    copy.write_bytes(original.read_bytes())
    _, failed, console = run(data_root, tmp_path)
    [item] = offending_items(failed["no_shared_content"])
    assert original.as_posix() in item and copy.as_posix() in item
    assert "tgt/test and tgt/train" in console


def test_same_content_across_domains_is_leakage(data_root, tmp_path):
    (data_root / "tgt/test/b/from_source.png").write_bytes((data_root / "src/train/b/00.png").read_bytes())
    _, failed, _ = run(data_root, tmp_path)
    assert "no_shared_content" in failed


def test_image_below_minimum_size(data_root, tmp_path):
    small = write_image(data_root / "src/train/a/tiny.png", seed=999, size=4)
    _, failed, console = run(data_root, tmp_path)
    assert offending_items(failed["image_width_in_range"]) == [small.as_posix()]
    assert offending_items(failed["image_height_in_range"]) == [small.as_posix()]
    assert "width 4 px" in console


def test_unusual_modes_are_accepted_converted_and_counted(data_root, tmp_path):
    # given RGBA, grayscale, palette and 16-bit images among the train images
    folder = data_root / "tgt/train/a"
    rgb = Image.fromarray(np.random.default_rng(5).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    rgb.convert("RGBA").save(folder / "rgba.png")
    rgb.convert("L").save(folder / "gray.png")
    rgb.convert("P").save(folder / "palette.png")
    Image.fromarray(np.random.default_rng(6).integers(0, 65535, (16, 16), dtype=np.uint16)).save(folder / "deep.png")
    # when validated
    result, failed, _ = run(data_root, tmp_path)
    # then it passes, and the report counts the modes and the conversions
    assert result.success, failed
    modes = result.report.to_json()["files"]["modes"]
    assert modes["RGBA"] == 1 and modes["P"] == 1 and modes["I;16"] == 1
    assert result.report.to_json()["files"]["converted_to_rgb"] == result.report.to_json()["files"]["readable"]  # all L or other


def test_decompression_bomb_is_rejected_quickly(data_root, tmp_path):
    # given a tiny file that decodes to 25 million pixels
    bomb = data_root / "src/train/a/bomb.png"
    Image.new("1", (5000, 5000)).save(bomb)
    assert bomb.stat().st_size < 100_000
    # when validated with the default pixel limit... it is refused before decoding
    started = time.perf_counter()
    _, failed, console = run(data_root, tmp_path, validation={"max_pixels": 4_000_000})
    assert time.perf_counter() - started < 60
    assert offending_items(failed["files_readable"]) == [bomb.as_posix()]
    assert "decompression bomb" in console


def test_pillow_own_bomb_limit_is_respected(data_root, tmp_path, monkeypatch):
    # Pillow's global limit is a second line of defence even with a generous config
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    bomb = write_image(data_root / "src/train/b/big.png", seed=4242, size=64)
    _, failed, _ = run(data_root, tmp_path)
    items = offending_items(failed["files_readable"])
    assert bomb.as_posix() in items
    assert "decompression bomb" in failed["files_readable"]["offending"][items.index(bomb.as_posix())]["detail"]


def test_symlink_outside_the_data_root_is_refused(data_root, tmp_path):
    outside = write_image(tmp_path / "elsewhere" / "secret.png", seed=31337)
    link = data_root / "tgt/train/b/link.png"
    link.symlink_to(outside)
    _, failed, console = run(data_root, tmp_path)
    assert offending_items(failed["files_readable"]) == [link.as_posix()]
    assert "outside the data root" in console


def test_symlinked_class_folder_outside_the_root_is_refused(data_root, tmp_path):
    make_domain(tmp_path / "outside", "d", classes=("c",), seed=9)
    link = data_root / "tgt/train/c"
    link.symlink_to(tmp_path / "outside/d/train/c", target_is_directory=True)
    _, failed, _ = run(data_root, tmp_path)
    assert link.as_posix() in offending_items(failed["files_readable"])


def test_symlink_inside_the_data_root_is_followed(data_root, tmp_path):
    target = write_image(data_root / "shared" / "img.png", seed=4444)
    (data_root / "tgt/train/a/linked.png").symlink_to(target)
    result, failed, _ = run(data_root, tmp_path)
    assert result.success, failed


def test_spaces_and_non_ascii_file_names_are_accepted(data_root, tmp_path):
    write_image(data_root / "tgt/train/a/my photo 1.png", seed=555)
    write_image(data_root / "tgt/train/b/chiffre_été_数字.png", seed=556)
    result, failed, _ = run(data_root, tmp_path)
    assert result.success, failed
    assert result.report.to_json()["domains"]["target"]["images"]["train"] == 14


def test_a_symlink_loop_is_a_named_finding_not_a_traceback(data_root, tmp_path):
    # given a link to itself in a class folder, and a pair of links pointing at each other
    loop = data_root / "tgt/train/a/loop.png"
    loop.symlink_to(loop)
    (data_root / "tgt/train/b/ping.png").symlink_to(data_root / "tgt/train/b/pong.png")
    (data_root / "tgt/train/b/pong.png").symlink_to(data_root / "tgt/train/b/ping.png")
    # when validated, then each is refused by name and the rest of the data is scanned
    result, failed, console = run(data_root, tmp_path, validation={"state_dir": str(tmp_path / "state")})
    assert sorted(offending_items(failed["files_readable"])) == sorted(
        [loop.as_posix(), (data_root / "tgt/train/b/ping.png").as_posix(), (data_root / "tgt/train/b/pong.png").as_posix()])
    assert "link loop" in console
    assert result.report.to_json()["domains"]["target"]["images"]["train"] == 12


def test_a_file_name_that_is_not_utf8_is_a_named_finding(data_root, tmp_path):
    import os

    # given a file whose name is Latin-1 bytes (old archives, Samba shares), not UTF-8
    folder = os.fsencode(data_root / "tgt/train/a")
    name = os.path.join(folder, b"caf\xe9.png")
    with open(name, "wb") as out:
        out.write((data_root / "tgt/train/a/00.png").read_bytes()[:-1] + b"\0")
    # when validated with the scan state on, twice
    for _ in range(2):
        result, failed, console = run(data_root, tmp_path, validation={"state_dir": str(tmp_path / "state")})
        # then it is refused by a readable name, and the report and manifest are written
        [item] = offending_items(failed["files_readable"])
        assert item.endswith("caf\\xe9.png") and "not valid UTF-8" in console
        assert (tmp_path / "reports" / "manifest.csv").read_text(encoding="utf-8")
    # and the flow's cache key over the data folder hashes it too
    from autotransfer.stages.pipeline import stage_key

    assert stage_key("validate", params_for(data_root)) != stage_key("validate", params_for(data_root, data={"seed": 1}))


def test_missing_split_folder(data_root, tmp_path):
    import shutil

    shutil.rmtree(data_root / "src/val")
    _, failed, console = run(data_root, tmp_path)
    assert offending_items(failed["split_folders_exist"]) == [(data_root / "src/val").as_posix()]
    assert "missing split folder" in console


def test_missing_domain_names_its_folders(tmp_path):
    root = tmp_path / "data"
    make_domain(root, "src", seed=1)
    result, failed, _ = run(root, tmp_path)
    assert not result.success
    assert (root / "tgt/train").as_posix() in offending_items(failed["split_folders_exist"])


def test_validation_never_modifies_the_data(data_root, tmp_path):
    # given a data root with good and bad files
    (data_root / "tgt/train/a/00.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    Image.fromarray(np.arange(256, dtype=np.uint16).reshape(16, 16) * 200).save(data_root / "src/train/a/deep.png")
    before = tree_digest(data_root)
    # when validated
    run(data_root, tmp_path)
    # then the bytes, names and modification times are unchanged
    assert tree_digest(data_root) == before


def test_target_classes_unknown_to_source_fail_only_without_target_labels(data_root, tmp_path):
    # given a target class the source does not have
    for split in ("train", "val", "test"):
        for i in range(6 if split == "train" else 2):
            write_image(data_root / f"tgt/{split}/new/{i}.png", seed=9000 + i + 10 * len(split))
    # with target labels it is only a warning
    result, failed, _ = run(data_root, tmp_path)
    assert result.success and failed["target_classes_in_source"]["severity"] == "warning"
    # without target labels nothing can learn the class: an error naming its folder
    result, failed, _ = run(data_root, tmp_path, data={"labeled_per_class": 0})
    assert not result.success
    assert (data_root / "tgt/train/new").as_posix() in offending_items(failed["target_classes_in_source"])


def test_unlabeled_folder_is_scanned(data_root, tmp_path):
    for i in range(3):
        write_image(data_root / "tgt/unlabeled" / f"u{i}.png", seed=6000 + i)
    result, failed, _ = run(data_root, tmp_path)
    assert result.success, failed
    assert result.report.to_json()["domains"]["target"]["images"]["unlabeled"] == 3


def test_label_cap_is_reported(data_root, tmp_path):
    result, _, _ = run(data_root, tmp_path, data={"labeled_per_class": 3})
    usage = result.report.to_json()["target_usage"]
    assert usage["labeled_per_class"] == {"a": 3, "b": 3}
    assert usage["unlabeled"] == 2 * (6 + 2 - 3) and usage["test"] == 4


def test_demo_data_is_valid(demo_root, tmp_path):
    for target in ("digits", "digits-m"):
        params = params_for(demo_root)
        params = params.model_copy(update={"data": params.data.model_copy(
            update={"source": "synth-digits", "target": target})})
        result = validate(params, reports_dir=tmp_path / target, progress=False)
        assert result.success, [c for c in result.report.to_json()["checks"] if not c["success"]]
        assert result.report.to_json()["domains"]["target"]["images"]["test"] == 539


def test_hidden_and_system_files_are_ignored_counted_and_listed_never_a_failure(data_root, tmp_path):
    # given a dataset copied from a Mac and a Windows share: Finder, AppleDouble, thumbnail files, a hidden folder
    junk = [data_root / "src/train/a/.DS_Store", data_root / "src/train/a/._00.png", data_root / "tgt/val/b/Thumbs.db",
            data_root / "tgt/test/a/desktop.ini", data_root / "tgt/train/.DS_Store"]
    for path in junk:
        path.write_bytes(b"\x00\x05\x16\x07 not an image")
    hidden = data_root / "src/train/b/.thumbnails"
    write_image(hidden / "small.png", 99_001)
    # when the data is validated
    result, failed, console = run(data_root, tmp_path)
    # then it passes, each junk path (the hidden folder once) is listed as ignored, none is in the manifest
    assert result.success and not failed
    assert sorted(result.report.ignored) == sorted(p.as_posix() for p in [*junk, hidden])
    assert result.report.files.ignored == 6
    assert not set(result.manifest["path"]) & set(result.report.ignored)
    assert "ignored 6 hidden or system files" in console
    markdown = result.markdown_path.read_text()
    assert "ignored (hidden and system files and folders, never images): 6" in markdown
    assert f"`{hidden.as_posix()}`" in markdown


def test_an_image_extension_on_other_content_still_fails_by_name(data_root, tmp_path):
    fake = data_root / "src/train/a/photo.png"
    fake.write_bytes(b"not a png at all")
    (data_root / "src/train/a/.DS_Store").write_bytes(b"\x00")
    _, failed, _ = run(data_root, tmp_path)
    assert offending_items(failed["files_readable"]) == [fake.as_posix()]


def test_images_in_sub_folders_of_a_class_folder_are_that_class_and_counted(data_root, tmp_path):
    nested = write_image(data_root / "tgt/train/a/album/2024/extra.png", 99_002)
    result, failed, _ = run(data_root, tmp_path)
    assert result.success and not failed
    row = result.manifest.set_index("path").loc[nested.as_posix()]
    assert row["label"] == "a" and row["split"] == "train"
    assert result.report.files.in_class_subfolders == 1
    assert "images in sub-folders of a class folder (taken as that class): 1" in result.markdown_path.read_text()


def class_folders(root: Path, name: str, per_class: int, classes=("a", "b"), seed: int = 50) -> Path:
    """``root/name/<class>/NN.png``: no split folders."""
    for c, label in enumerate(classes):
        for i in range(per_class):
            write_image(root / name / label / f"{i:03d}.png", seed * 1000 + c * 100 + i)
    return root / name


def test_class_folders_are_split_by_content_and_the_splits_only_grow(data_root, tmp_path):
    # given a target of class folders only (<target>/<class>/*.png)
    class_folders(data_root, "photos", 40)
    result, failed, _ = run(data_root, tmp_path, data={"target": "photos"})
    # then it validates, every file gets a split from its content, about as the shares say
    assert result.success and not failed
    files = result.manifest[result.manifest["domain"] == "photos"]
    assert set(files["split_by"]) == {"content"} and set(files["split"]) == {"train", "val", "test"}
    shares = files["split"].value_counts(normalize=True)
    assert 0.08 < shares["test"] < 0.35 and 0.03 < shares["val"] < 0.3
    images = result.report.to_json()["domains"]["target"]["images"]
    assert sum(images[s] for s in ("train", "val", "test")) == 80
    # and the source's explicit split folders are still its splits
    assert set(result.manifest.loc[result.manifest["domain"] == "src", "split_by"]) == {"folder"}
    # when new images arrive (and one is moved to a sub-folder), no image changes split: test only grows
    before = dict(zip(files["sha256"], files["split"]))
    for c, label in enumerate(("a", "b")):
        for i in range(30):
            write_image(data_root / "photos" / label / f"new-{i:03d}.png", 90_000 + c * 100 + i)
    moved = data_root / "photos/a/000.png"
    moved.rename((data_root / "photos/a/album").mkdir() or data_root / "photos/a/album/000.png")
    again, _, _ = run(data_root, tmp_path, data={"target": "photos"})
    after = again.manifest[again.manifest["domain"] == "photos"]
    assert len(after) == 140
    assert {h: s for h, s in zip(after["sha256"], after["split"]) if h in before} == before
    old_test = {h for h, s in before.items() if s == "test"}
    assert old_test < set(after.loc[after["split"] == "test", "sha256"])


def test_one_image_under_two_classes_is_named(data_root, tmp_path):
    target = class_folders(data_root, "photos", 20)
    (target / "b" / "copy.png").write_bytes((target / "a" / "003.png").read_bytes())
    result, failed, console = run(data_root, tmp_path, data={"target": "photos"})
    assert not result.success
    [item] = offending_items(failed["one_label_per_image"])
    assert (target / "a/003.png").as_posix() in item and (target / "b/copy.png").as_posix() in item
    assert "the same image under classes a, b" in console


def test_a_class_folder_without_a_test_image_says_why(data_root, tmp_path):
    # given a class of three images: by their content hashes none falls in test at a tiny test share
    class_folders(data_root, "photos", 30)
    result, failed, console = run(data_root, tmp_path, data={"target": "photos", "test_share": 0.001})
    # then validation names the class and says how splits are made (val may be empty: it is optional here)
    assert not result.success and set(failed) == {"eval_images_per_class"}
    items = offending_items(failed["eval_images_per_class"])
    assert items == [(data_root / f"photos/{c}").as_posix() + " (test split, by content)" for c in "ab"]
    assert "each image's split comes from its content" in console


def test_a_source_free_run_validates_the_target_alone(data_root, tmp_path):
    result, failed, _ = run(data_root, tmp_path, data={"source": None})
    assert result.success and not failed
    assert list(result.report.domains) == ["target"] and set(result.manifest["domain"]) == {"tgt"}
    assert not any(c["id"].startswith("source") for c in result.report.to_json()["checks"])
