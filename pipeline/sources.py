"""Inputs of the job: listing a directory, glob or archive, and reading files and members.

Everything goes through `apache_beam.io.filesystems.FileSystems`, so an input can live on any
filesystem Beam knows (local, gs://, s3://, hdfs://...). Archives (.tar, .tar.gz/.tgz, .zip)
are read in place as streams: no member is ever extracted to disk, and a member whose name
could escape a directory (`../x`, `/abs`, `C:\\x`) or that is not a regular file (symlink,
hard link, device) is reported as skipped, never read.
"""
import collections
import posixpath
import re
import stat
import tarfile
import zipfile
import zlib

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

# Skip reasons owned by this module (the job's report and counters use them as they are).
UNSAFE_ARCHIVE_PATH = "unsafe_archive_path"
NOT_A_REGULAR_FILE = "not_a_regular_file"
UNREADABLE = "unreadable"
UNREADABLE_ARCHIVE = "unreadable_archive"
FILE_TOO_LARGE = "file_too_large"

# A face image is kilobytes; anything this large is not one (and could be a zip bomb member).
MAX_INPUT_BYTES = 64 * 1024 * 1024

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
ZIP_SUFFIXES = (".zip",)
ARCHIVE_SUFFIXES = TAR_SUFFIXES + ZIP_SUFFIXES

_GLOB_CHARS = re.compile(r"[*?\[]")

# One listed input: a file to read, or an archive whose members are the inputs.
# source_id is the path relative to the input directory / glob prefix (the record's
# `image/source_id`); for an archive it only names the archive in error reports.
InputFile = collections.namedtuple("InputFile", ["path", "source_id", "size", "is_archive"])

# One input that could not be used: where it came from, a reason code and a human detail.
Skip = collections.namedtuple("Skip", ["source_id", "reason", "detail"])


class InputError(ValueError):
    """The --input names nothing usable (missing path, empty directory, glob with no match)."""


def is_archive(path):
    return path.lower().endswith(ARCHIVE_SUFFIXES)


def _is_dir(path):
    # tf.io.gfile knows directories on every filesystem TF has a plugin for (local, gs://...);
    # Beam's FileSystems has no isdir.
    import tensorflow as tf

    try:
        return tf.io.gfile.isdir(path)
    except tf.errors.OpError:
        return False


def list_inputs(spec):
    """The inputs an --input names, sorted by source id; raises `InputError` when none.

    spec: a directory (every file below it, recursively), a glob, or a single file
    (an image or an archive). Archives found by a directory or glob are read as archives.
    """
    spec = str(spec).strip()
    if not spec:
        raise InputError("--input is empty")
    if _GLOB_CHARS.search(spec):
        base = spec[:_GLOB_CHARS.search(spec).start()].rsplit("/", 1)[0]
        pattern, what = spec, f"the glob {spec!r} matches no file"
    elif _is_dir(spec):
        base = spec.rstrip("/")
        pattern, what = base + "/**", f"the input directory {spec!r} contains no file"
    else:
        base = posixpath.dirname(spec.rstrip("/"))
        pattern, what = spec, f"the input {spec!r} does not exist"
    try:
        matched = FileSystems.match([pattern])[0].metadata_list
    except Exception as e:  # Beam raises BeamIOError for a missing directory on some filesystems
        raise InputError(f"{what} ({e})") from e
    inputs = []
    for meta in matched:
        rel = meta.path[len(base):].lstrip("/") if base and meta.path.startswith(base) else meta.path
        inputs.append(InputFile(meta.path, rel or posixpath.basename(meta.path),
                                meta.size_in_bytes, is_archive(meta.path)))
    if not inputs:
        raise InputError(what)
    return sorted(inputs, key=lambda f: f.source_id)


def _open(path):
    # UNCOMPRESSED: Beam would otherwise transparently gunzip `x.tar.gz`, and tarfile
    # does its own decompression (and must see the real bytes to detect the format).
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def read_file(path):
    """All bytes of one file on any Beam filesystem."""
    with _open(path) as f:
        return f.read()


def safe_member_name(name):
    """The member's normalised relative name, or None when it could escape a directory."""
    name = name.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    parts = name.split("/")
    if (not name or name.startswith("/") or re.match(r"^[A-Za-z]:", name)
            or any(p == ".." for p in parts)):
        return None
    return posixpath.normpath(name)


def _tar_members(fileobj):
    # "r|*": a forward-only stream (works on any Beam filesystem, gz detected by content).
    # Yields (name, is_regular, size, read); `read` is only valid until the next member.
    with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
        for member in tar:
            if not member.isdir():
                yield (member.name, member.isfile(), member.size,
                       lambda m=member: tar.extractfile(m).read())


def _zip_members(fileobj):
    with zipfile.ZipFile(fileobj) as zf:
        for info in zf.infolist():
            if not info.is_dir():
                # Unix type bits, when the zip has them (a symlink is S_IFLNK); none = file.
                file_type = stat.S_IFMT(info.external_attr >> 16)
                yield (info.filename, file_type in (0, stat.S_IFREG), info.file_size,
                       lambda i=info: zf.read(i))


def iter_archive(archive):
    """Yields `(source_id, bytes)` for each regular member, or a `Skip` for any other.

    The name check comes first, so an unsafe member is never even read. A corrupt archive
    yields what it could read and then one `Skip` for the archive itself.
    """
    members = _zip_members if archive.path.lower().endswith(ZIP_SUFFIXES) else _tar_members
    try:
        with _open(archive.path) as f:
            for name, is_regular, size, read in members(f):
                safe = safe_member_name(name)
                if safe is None:
                    yield Skip(name, UNSAFE_ARCHIVE_PATH,
                               f"member of {archive.source_id} escapes the archive root; not read")
                elif not is_regular:
                    yield Skip(safe, NOT_A_REGULAR_FILE, "link or special file; not read")
                elif size > MAX_INPUT_BYTES:
                    yield Skip(safe, FILE_TOO_LARGE, f"{size} bytes")
                else:
                    try:
                        data = read()
                    except (zipfile.BadZipFile, RuntimeError, NotImplementedError,
                            zlib.error) as e:  # encrypted or corrupt zip member
                        yield Skip(safe, UNREADABLE, f"{type(e).__name__}: {e}")
                        continue
                    yield safe, data
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
        yield Skip(archive.source_id, UNREADABLE_ARCHIVE, f"{type(e).__name__}: {e}")
