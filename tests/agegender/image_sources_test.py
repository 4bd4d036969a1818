"""Listing inputs and reading archives in place, including unsafe member names."""
import io
import os
import subprocess
import sys
import tarfile
import textwrap
import zipfile

import pytest

from agegender import image_sources as sources
from agegender import labelled_inputs
from agegender.image_sources import Skip

REPO = __file__.rsplit("/tests/", 1)[0]


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


# -- local entries that are not plain files, and names that are not UTF-8 -------------------

def _special_tree(tmp_path):
    """An input directory with one face and every kind of entry that is not a regular file."""
    src, outside = tmp_path / "in", tmp_path / "outside"
    _touch(str(src / "a.jpg"), b"A")
    _touch(str(outside / "face.jpg"), b"F")
    _touch(str(outside / "sub" / "b.jpg"), b"B")
    os.symlink(outside / "face.jpg", src / "link.jpg")
    os.symlink("/dev/zero", src / "zero.jpg")
    os.symlink(outside / "sub", src / "linked_dir")
    os.symlink(src, src / "loop")
    os.symlink(tmp_path / "nothing", src / "dangling.jpg")
    os.mkfifo(src / "fifo.jpg")
    return src


def test_links_and_special_files_are_listed_as_skips_never_followed_by_default(tmp_path):
    src = _special_tree(tmp_path)
    listed = {f.source_id: f for f in sources.list_inputs(str(src))}
    assert listed["a.jpg"].skip is None and listed["a.jpg"].size == 1
    skipped = {k: f.skip.reason for k, f in listed.items() if f.skip}
    assert skipped == {k: sources.NOT_A_REGULAR_FILE for k in (
        "link.jpg", "zero.jpg", "linked_dir", "loop", "dangling.jpg", "fifo.jpg")}
    assert "symbolic link" in listed["link.jpg"].skip.detail
    assert "FIFO" in listed["fifo.jpg"].skip.detail
    # A glob sees the same entries for what they are.
    globbed = {f.source_id: f.skip and f.skip.reason for f in sources.list_inputs(str(src / "*.jpg"))}
    assert globbed == {"a.jpg": None, "dangling.jpg": sources.NOT_A_REGULAR_FILE,
                       "fifo.jpg": sources.NOT_A_REGULAR_FILE, "link.jpg": sources.NOT_A_REGULAR_FILE,
                       "zero.jpg": sources.NOT_A_REGULAR_FILE}


def test_follow_symlinks_follows_links_to_files_and_directories_only(tmp_path):
    src = _special_tree(tmp_path)
    listed = {f.source_id: f for f in sources.list_inputs(str(src), follow_symlinks=True)}
    readable = sorted(k for k, f in listed.items() if not f.skip)
    assert readable == ["a.jpg", "link.jpg", "linked_dir/b.jpg"]
    assert listed["link.jpg"].size == 1
    skipped = {k: f.skip.reason for k, f in listed.items() if f.skip}
    assert skipped == {k: sources.NOT_A_REGULAR_FILE
                       for k in ("zero.jpg", "loop", "dangling.jpg", "fifo.jpg")}
    assert "character device" in listed["zero.jpg"].skip.detail


def test_a_special_file_named_as_the_input_is_a_clear_error(tmp_path):
    os.mkfifo(tmp_path / "faces.tar")
    with pytest.raises(sources.InputError, match="FIFO"):
        sources.list_inputs(str(tmp_path / "faces.tar"))
    # A link named on the command line is the user's choice: it is read, under its name.
    _touch(str(tmp_path / "real.tar"), b"x")
    os.symlink(tmp_path / "real.tar", tmp_path / "named.tar")
    (listed,) = sources.list_inputs(str(tmp_path / "named.tar"))
    assert (listed.source_id, listed.path, listed.skip) == ("named.tar", str(tmp_path / "real.tar"), None)


def _in_thread(fn, seconds=20):
    """fn() in a daemon thread: a call that blocks forever fails the test, not the run."""
    import threading

    result = {}

    def run():
        try:
            result["value"] = fn()
        except BaseException as e:  # handed to the test
            result["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "blocked"
    return result


def test_reading_refuses_what_is_not_a_regular_file_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "fifo.jpg")
    os.symlink("/dev/zero", tmp_path / "zero.jpg")
    _touch(str(tmp_path / "a.jpg"), b"1234")
    os.symlink(tmp_path / "a.jpg", tmp_path / "link.jpg")
    for name, follow in (("fifo.jpg", True), ("zero.jpg", True), ("link.jpg", False)):
        result = _in_thread(lambda: sources.read_file(str(tmp_path / name), 100, follow))
        assert isinstance(result.get("error"), sources.NotARegularFile), name
    assert sources.read_file(str(tmp_path / "link.jpg"), 100, follow_symlinks=True) == b"1234"
    assert sources.read_file(str(tmp_path / "a.jpg"), 4) == b"1234"
    with pytest.raises(sources.InputTooLarge):
        sources.read_file(str(tmp_path / "a.jpg"), 3)


@pytest.mark.parametrize("raw", [b"\xff\xfe_1_0_x.jpg", b"caf\xe9.jpg", b"a\\\xff.jpg", b"a\\xff.jpg",
                                 b"\\\\x41\x80", "é.jpg".encode()])
def test_printable_name_is_lossless(raw):
    import codecs

    name = os.fsdecode(raw)
    shown = sources.printable_name(name)
    shown.encode("utf-8")  # always valid text
    if sources.is_valid_name(name):
        assert shown == name
    else:
        # Among escaped names, the text maps back to exactly the original bytes.
        assert codecs.escape_decode(shown.encode("utf-8"))[0] == raw


def test_non_utf8_names_are_skips_in_listings_and_archives(tmp_path):
    src = os.fsencode(str(tmp_path / "in"))
    os.makedirs(src)
    for name in (b"ok.jpg", b"\xff.jpg"):
        with open(os.path.join(src, name), "wb") as f:
            f.write(b"x")
    listed = sources.list_inputs(os.fsdecode(src))
    assert [(f.source_id, f.skip and f.skip.reason) for f in listed] == [
        ("\\xff.jpg", sources.BAD_FILE_NAME), ("ok.jpg", None)]
    listed[0].source_id.encode("utf-8")
    listed[0].path.encode("utf-8")  # nothing with surrogates travels through Beam
    tar_path = tmp_path / "names.tar"
    _tar(str(tar_path), [(os.fsdecode(b"d\xfe/x.jpg"), b"1"), ("y.jpg", b"2")], mode="w")
    assert list(sources.iter_archive(_archive(tar_path))) == [
        Skip("d\\xfe/x.jpg", sources.BAD_FILE_NAME, sources._bad_name_skip("x").detail),
        ("y.jpg", b"2")]


def test_zip_with_an_invalid_utf8_flagged_name_is_one_skip(tmp_path):
    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a\u00e9b.jpg", b"data")  # not ASCII: stored as UTF-8, flagged so
    path.write_bytes(path.read_bytes().replace("a\u00e9b".encode(), b"a\xff\xffb"))
    out = list(sources.iter_archive(_archive(path)))
    assert [(s.source_id, s.reason) for s in out] == [("bad.zip", sources.UNREADABLE_ARCHIVE)]


# -- decode cost and declared sizes (issue 23) ------------------------------------------------

def test_a_scan_bomb_is_a_skip_of_its_own_reason(hostile_files):
    name = "30_1_0_20170101000000999.jpg"
    labeller = labelled_inputs.Labeller()
    assert labelled_inputs.check(name, hostile_files.jpeg_scan_bomb(64, 0), labeller).age == 30
    skip = labelled_inputs.check(name, hostile_files.jpeg_scan_bomb(64, 200), labeller)
    assert (skip.source_id, skip.reason) == (name, sources.IMAGE_TOO_COSTLY)
    assert "206 scans, over the limit of 100" in skip.detail


def test_a_zip_member_with_a_false_size_is_a_skip_in_bounded_memory(tmp_path, hostile_files):
    """Issue 23: 2,097,152,000 zero bytes under headers declaring 1,000 (a 2 MB zip). zipfile
    inflated it in one call (2.9 GB); here the child has 512 MB of address space beyond what
    it holds after importing this module, and the member is a skip once 64 MiB came out."""
    path = tmp_path / "faces.zip"
    path.write_bytes(hostile_files.zip_with_false_size({"20_0_0_a.jpg": b"A" * 1000},
                                                       2_097_152_000, 1000))
    assert path.stat().st_size < 3_000_000
    script = textwrap.dedent(f"""
        import resource
        from agegender import image_sources as sources
        peak = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmPeak")][0]
        limit = peak * 1024 + (512 << 20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        archive = sources.InputFile({str(path)!r}, "faces.zip", None, True)  # no TF import
        for out in sources.iter_archive(archive):
            print(out.source_id, out.reason, out.detail) if isinstance(out, sources.Skip) \\
                else print(out[0], len(out[1]))
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == [
        "20_0_0_a.jpg 1000",
        "30_1_0_20170101000000999.jpg file_too_large more than 67,108,864 bytes once "
        "decompressed (its header declares 1,000); read no further"]


def test_a_zip_member_holding_other_than_it_declares_is_not_used(tmp_path, hostile_files,
                                                                 monkeypatch):
    path = tmp_path / "faces.zip"
    path.write_bytes(hostile_files.zip_with_false_size({}, 16 << 20, 1000))
    [skip] = sources.iter_archive(_archive(path))
    assert skip.reason == sources.UNREADABLE  # 16 MiB inflated, its CRC is 1000 bytes'
    monkeypatch.setattr(sources, "MAX_INPUT_BYTES", 5000)
    [skip] = sources.iter_archive(_archive(path))
    assert skip.reason == sources.FILE_TOO_LARGE and "more than 5,000 bytes" in skip.detail


def test_bzip2_and_lzma_are_refused_not_inflated(tmp_path):
    """zipfile and tarfile inflate them a compressed read at a time with no output bound."""
    path = str(tmp_path / "in.zip")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a.jpg", b"A" * 100, compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr("b.jpg", b"B" * 100, compress_type=zipfile.ZIP_BZIP2)
        zf.writestr("c.jpg", b"C" * 100, compress_type=zipfile.ZIP_LZMA)
    out = list(sources.iter_archive(_archive(path)))
    assert out[0] == ("a.jpg", b"A" * 100)
    assert [(s.source_id, s.reason) for s in out[1:]] == [("b.jpg", sources.UNREADABLE),
                                                        ("c.jpg", sources.UNREADABLE)]
    assert "compression method 12: only stored and deflate" in out[1].detail
    for mode in ("w:bz2", "w:xz"):  # behind a .tar name
        tar = tmp_path / f"in-{mode[2:]}.tar"
        with tarfile.open(tar, mode) as t:
            info = tarfile.TarInfo("a.jpg")
            info.size = 1
            t.addfile(info, io.BytesIO(b"A"))
        assert [s.reason for s in sources.iter_archive(_archive(tar))] == [
            sources.UNREADABLE_ARCHIVE]
