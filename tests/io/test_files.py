"""Atomic writes (io/files.py): readers see the old file or the new one, whole, whoever writes."""

import threading
import time

import pytest

from autotransfer.errors import OutputError
from autotransfer.io.files import write_atomic


def test_two_writers_of_one_path_never_mix_or_lose_a_file(tmp_path):
    # given two runs writing the same file at once, each slowly (two halves, a pause between)
    path = tmp_path / "model.safetensors"
    contents = {name: name.encode() * 50_000 for name in ("a", "b")}
    errors = []
    both_started = threading.Barrier(2)

    def writer(name):
        def write(tmp):
            with open(tmp, "wb") as out:
                out.write(contents[name][:25_000])
                both_started.wait()
                time.sleep(0.05)
                out.write(contents[name][25_000:])

        try:
            write_atomic(path, write)
        except Exception as exc:  # noqa: BLE001 - the test reports what a writer met
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(name,)) for name in contents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # then both writes succeed, the file is one of the two, whole, and no temp file is left
    assert not errors
    assert path.read_bytes() in contents.values()
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_a_failed_write_leaves_the_previous_file_and_no_temp_file(tmp_path):
    path = tmp_path / "report.json"
    path.write_text("old")

    def fails(tmp):
        tmp.write_text("half")
        raise OSError(28, "No space left on device")

    # then the error names the file and the reason, and nothing else changed
    with pytest.raises(OutputError, match=r"cannot write .*report.json: No space left on device"):
        write_atomic(path, fails)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["report.json"]
