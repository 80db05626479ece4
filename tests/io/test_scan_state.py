"""Incremental validation: an unchanged file is not decoded or hashed again; a changed one is."""

import os

import pandas as pd

from autotransfer.io import manifest
from autotransfer.io.scan_state import STATE_FILE
from autotransfer.stages.validate import validate
from autotransfer.stages.pipeline import VALIDATE
from conftest import write_image
from stage_helpers import tiny_params


def counting_hashes(monkeypatch) -> list:
    calls: list = []
    real = manifest.sha256_file

    def spy(path):
        calls.append(path)
        return real(path)

    monkeypatch.setattr(manifest, "sha256_file", spy)
    return calls


def test_a_rerun_reads_only_what_changed_and_gives_the_same_manifest(data_root, tmp_path, monkeypatch):
    params = tiny_params(data_root, tmp_path, validation={"state_dir": str(tmp_path / "state")})
    hashed = counting_hashes(monkeypatch)
    # given a first validation: every file read
    first = validate(params, progress=False)
    total = len(first.manifest)
    assert (first.read, first.reused) == (total, 0) and len(hashed) == total
    # when nothing changed: nothing is read again, and the manifest is identical
    hashed.clear()
    second = validate(params, progress=False)
    assert (second.read, second.reused) == (0, total) and hashed == []
    pd.testing.assert_frame_equal(first.manifest, second.manifest)
    # when one file gets new content (and a new mtime): that file alone is read, and its row changes
    changed = data_root / "tgt" / "train" / "a" / "00.png"
    old_hash = first.manifest.set_index("path").loc[changed.as_posix(), "sha256"]
    write_image(changed, seed=999)
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    third = validate(params, progress=False)
    assert (third.read, third.reused) == (1, total - 1) and hashed == [changed]
    assert third.manifest.set_index("path").loc[changed.as_posix(), "sha256"] != old_hash
    # when the pixel limit changes, a file's verdict may too: everything is read again
    hashed.clear()
    stricter = tiny_params(
        data_root, tmp_path, validation={"state_dir": str(tmp_path / "state"), "max_pixels": 100}
    )
    fourth = validate(stricter, progress=False)
    assert fourth.read == total and not fourth.manifest["readable"].any()


def test_a_broken_state_file_is_started_afresh_not_trusted(data_root, tmp_path):
    state = tmp_path / "state"
    params = tiny_params(data_root, tmp_path, validation={"state_dir": str(state)})
    reference = validate(params, progress=False).manifest
    (state / STATE_FILE).write_bytes(b"this is not a sqlite database" * 100)
    again = validate(params, progress=False)
    assert again.read == len(reference) and again.reused == 0
    pd.testing.assert_frame_equal(reference, again.manifest)


def test_without_a_state_dir_every_file_is_read_every_time(data_root, tmp_path):
    params = tiny_params(data_root, tmp_path, validation={"state_dir": None})
    VALIDATE.run(params, progress=False)
    again = validate(params, progress=False)
    assert again.reused == 0 and again.read == len(again.manifest)
