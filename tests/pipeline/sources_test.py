"""Listing inputs and reading archives in place, including unsafe member names."""
import io
import os
import tarfile
import zipfile

import pytest

from pipeline import sources
from pipeline.sources import Skip


def _touch(path, data=b"x"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def test_directory_lists_every_file_recursively_with_relative_ids(tmp_path):
    _touch(str(tmp_path / "d" / "b.jpg"))
    _touch(str(tmp_path / "d" / "sub" / "a.jpg"))
    _touch(str(tmp_path / "d" / "x.tar.gz"))
    listed = sources.list_inputs(str(tmp_path / "d"))
    assert [(f.source_id, f.is_archive) for f in listed] == [
        ("b.jpg", False), ("sub/a.jpg", False), ("x.tar.gz", True)]


def test_glob_ids_are_relative_to_the_glob_directory(tmp_path):
    for name in ("1.jpg", "2.jpg", "3.png"):
        _touch(str(tmp_path / name))
    listed = sources.list_inputs(str(tmp_path / "*.jpg"))
    assert [f.source_id for f in listed] == ["1.jpg", "2.jpg"]


@pytest.mark.parametrize("make,message", [
    (lambda t: (t / "empty").mkdir() or str(t / "empty"), "contains no file"),
    (lambda t: str(t / "nothing*.jpg"), "matches no file"),
    (lambda t: str(t / "missing.tar.gz"), "does not exist"),
    (lambda t: "", "empty"),
])
def test_no_input_is_a_clear_error(tmp_path, make, message):
    with pytest.raises(sources.InputError, match=message):
        sources.list_inputs(make(tmp_path))


@pytest.mark.parametrize("name,safe", [
    ("a.jpg", "a.jpg"),
    ("./a.jpg", "a.jpg"),
    ("dir/./a.jpg", "dir/a.jpg"),
    ("../a.jpg", None),
    ("dir/../../a.jpg", None),
    ("dir/../a.jpg", None),
    ("/etc/passwd", None),
    ("C:\\x.jpg", None),
    ("..\\x.jpg", None),
    ("", None),
])
def test_safe_member_name(name, safe):
    assert sources.safe_member_name(name) == safe


def _tar(path, members, mode="w:gz"):
    with tarfile.open(path, mode) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _archive(path):
    return sources.InputFile(str(path), os.path.basename(str(path)), None, True)


def test_tar_member_escaping_the_root_is_reported_not_read(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    path = _tar(str(work / "in.tar.gz"), [("../evil.jpg", b"bad"), ("ok/a.jpg", b"good"),
                                          ("/abs.jpg", b"bad")])
    link = tarfile.TarInfo("link.jpg")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    with tarfile.open(str(work / "links.tar"), "w") as tar:
        tar.addfile(link)
    out = list(sources.iter_archive(_archive(path)))
    out += list(sources.iter_archive(_archive(work / "links.tar")))
    assert out == [
        Skip("../evil.jpg", sources.UNSAFE_ARCHIVE_PATH, out[0].detail),
        ("ok/a.jpg", b"good"),
        Skip("/abs.jpg", sources.UNSAFE_ARCHIVE_PATH, out[2].detail),
        Skip("link.jpg", sources.NOT_A_REGULAR_FILE, out[3].detail),
    ]
    # Nothing was extracted anywhere.
    assert sorted(os.listdir(tmp_path)) == ["work"]
    assert sorted(os.listdir(work)) == ["in.tar.gz", "links.tar"]


def test_zip_members_and_unsafe_names(tmp_path):
    path = str(tmp_path / "in.zip")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a.jpg", b"A")
        zf.writestr("dir/", b"")
        zf.writestr("../../evil.jpg", b"bad")
    out = list(sources.iter_archive(_archive(path)))
    assert out[0] == ("a.jpg", b"A")
    assert out[1].reason == sources.UNSAFE_ARCHIVE_PATH and out[1].source_id == "../../evil.jpg"
    assert len(out) == 2


@pytest.mark.parametrize("suffix", [".tar.gz", ".zip"])
def test_corrupt_archive_is_one_skip(tmp_path, suffix):
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(b"definitely not an archive" * 10)
    out = list(sources.iter_archive(_archive(path)))
    assert [(s.source_id, s.reason) for s in out] == [
        (f"broken{suffix}", sources.UNREADABLE_ARCHIVE)]


def test_plain_tar_and_tgz_are_archives():
    assert all(sources.is_archive(n) for n in ("a.tar", "a.TAR.GZ", "a.tgz", "a.zip"))
    assert not sources.is_archive("a.jpg.chip.jpg")
