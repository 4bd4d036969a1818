"""agegender.atomic_files: several targets replaced together or not at all, and one JSON
document that a reader sees whole."""
import json
import os

import pytest

from agegender import atomic_files


def test_every_target_is_replaced_when_every_temp_file_is_written(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"old a")
    atomic_files.write_atomically([(str(a), b"new a"), (str(b), b"new b")])
    assert (a.read_bytes(), b.read_bytes()) == (b"new a", b"new b")
    assert sorted(os.listdir(tmp_path)) == ["a.bin", "b.bin"]  # no temp file left


def test_a_failed_write_leaves_every_target_as_it_was_and_no_temp_file(tmp_path):
    a = tmp_path / "a.bin"
    a.write_bytes(b"old a")
    missing_dir = tmp_path / "no such dir" / "b.bin"
    with pytest.raises(Exception):
        atomic_files.write_atomically([(str(a), b"new a"), (str(missing_dir), b"new b")])
    assert a.read_bytes() == b"old a"
    assert os.listdir(tmp_path) == ["a.bin"]


def test_json_is_replaced_whole(tmp_path):
    path = tmp_path / "state.json"
    path.write_text('{"epoch": 1}')
    atomic_files.write_json_atomically(str(path), {"epoch": 2, "a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2], "epoch": 2}
    assert path.read_text().index('"a"') < path.read_text().index('"epoch"')  # sorted keys
    assert os.listdir(tmp_path) == ["state.json"]
