"""Where face images come from: the one source the records job, the annotation job and the
evaluation share (listing, reading with the safety rules, archives, and why an input is
skipped).

- `list_inputs(spec)`: a directory, glob or archive -> `InputFile`s (with a `Skip` for
  entries that are never to be read); `read_input(item)` -> bytes or a `Skip`;
  `iter_archive(item)` -> members or `Skip`s.
- What is done with the bytes before any decoder sees them (labels, the header's limits)
  and the whole loop for the evaluation are `agegender.labelled_inputs`'.

Skip reasons are named once, here (file-level) and in `agegender.names` (labels); the job's
dedup adds its own two (`pipeline.transforms`).

Everything goes through `apache_beam.io.filesystems.FileSystems`, so an input can live on any
filesystem Beam knows (local, gs://, s3://, hdfs://...). Archives (.tar, .tar.gz/.tgz, .zip)
are read in place as streams (`agegender.archive_members`): no member is ever extracted to
disk, a member whose name could escape a directory (`../x`, `/abs`, `C:\\x`) or that is not
a regular file (symlink, hard link, device) is reported as skipped, never read, and a
member's bytes are counted as they are decompressed, whatever its header declares.

Local inputs are listed with `os.scandir`/`lstat` instead, because only there can an entry
be something other than a file: a symbolic link (to a face outside the input, `/etc/passwd`,
`/dev/zero`, a directory), a FIFO (opening it waits forever), a device, a socket. Those are
listed as skipped (`not_a_regular_file`), never opened; `follow_symlinks=True` follows links
to regular files and directories (loops are cut), still never to anything else. Reading
re-checks at open time (`open_input`), so an entry swapped for a FIFO or a link after the
listing is refused too, and never reads more than it was asked to.

A local name that is not valid UTF-8 (Linux names are bytes) cannot be a record's source id
or travel through Beam's coders: it is listed as skipped (`bad_file_name`) under
`printable_name`, never read.
"""
import collections
import errno
import os
import posixpath
import re
import stat
import tarfile
import zipfile
import zlib

from apache_beam.io.filesystem import CompressionTypes, FileSystem
from apache_beam.io.filesystems import FileSystems

from agegender import archive_members

# Skip reasons owned by this module (the job's report and counters, the evaluation's report).
UNSAFE_ARCHIVE_PATH = "unsafe_archive_path"
NOT_A_REGULAR_FILE = "not_a_regular_file"
UNREADABLE = "unreadable"
UNREADABLE_ARCHIVE = "unreadable_archive"
FILE_TOO_LARGE = "file_too_large"
BAD_FILE_NAME = "bad_file_name"
EMPTY_FILE = "empty_file"
UNDECODABLE = "undecodable"
IMAGE_TOO_LARGE = "image_too_large"
IMAGE_TOO_COSTLY = "image_too_costly"  # decoding would cost far more than its pixels
NO_FACE = "no_face"  # a photo the face detector found no face in (--align_faces, --photos)

# A face image is kilobytes; anything this large is not one (and could be a zip bomb member).
MAX_INPUT_BYTES = 64 * 1024 * 1024

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
ZIP_SUFFIXES = (".zip",)
ARCHIVE_SUFFIXES = TAR_SUFFIXES + ZIP_SUFFIXES

_GLOB_CHARS = re.compile(r"[*?\[]")

# One listed input: a file to read, or an archive whose members are the inputs.
# source_id is the path relative to the input directory / glob prefix (the record's
# `image/source_id`); for an archive it only names the archive in error reports.
# skip: a `Skip` when the listing already knows the entry is not to be read (a link, a FIFO,
# a bad name...): it is counted as an input and reported, never opened (for a bad name,
# `path` is the printable name: no surrogate may travel through Beam's coders).
InputFile = collections.namedtuple("InputFile", ["path", "source_id", "size", "is_archive", "skip"],
                                   defaults=[None])

# One input that could not be used: where it came from, a reason code and a human detail.
Skip = collections.namedtuple("Skip", ["source_id", "reason", "detail"])


class InputError(ValueError):
    """The --input names nothing usable (missing path, empty directory, glob with no match)."""


class NotARegularFile(OSError):
    """`open_input` refused a symbolic link, FIFO, device or socket (it was not opened for reading)."""


class InputTooLarge(OSError):
    """`read_file` found more bytes than it may read."""


def is_valid_name(name):
    """Whether `name` is valid UTF-8 text (a local name may hold undecodable bytes)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable_name(name):
    """`name` itself when it is valid UTF-8; else its bytes with backslash escapes.

    Python holds an undecodable byte of a local name as a lone surrogate (`surrogateescape`),
    which neither Beam's coders nor UTF-8 accept. Each such byte becomes `\\xHH` and every
    backslash is doubled first, so among escaped names the text maps back to exactly one
    byte string (lossless, deterministic): b'\\xff\\xfe_1.jpg' -> '\\\\xff\\\\xfe_1.jpg'.
    """
    if is_valid_name(name):
        return name
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that did not come from a byte: escape it as text
        return name.replace("\\", "\\\\").encode("utf-8", "backslashreplace").decode("ascii")
    return raw.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")


def _bad_name_skip(source_id):
    shown = printable_name(source_id)
    return Skip(shown, BAD_FILE_NAME,
                "the name is not valid UTF-8 (shown with \\x escapes, backslashes doubled); "
                "not read: rename the file")


def is_local(path):
    """A path of the local filesystem (no `scheme://`), where lstat and links mean something."""
    return FileSystems.get_scheme(str(path)) is None


def _describe(mode):
    return {stat.S_IFLNK: "symbolic link", stat.S_IFIFO: "FIFO", stat.S_IFCHR: "character device",
            stat.S_IFBLK: "block device", stat.S_IFSOCK: "socket",
            stat.S_IFDIR: "directory"}.get(stat.S_IFMT(mode), "special file")


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


def list_inputs(spec, follow_symlinks=False):
    """The inputs an --input names, sorted by source id; raises `InputError` when none.

    spec: a directory (every file below it, recursively), a glob, or a single file
    (an image or an archive). Archives found by a directory or glob are read as archives.
    Entries not to be read (links unless `follow_symlinks`, special files, names that are not
    UTF-8) are listed with their `skip`, so the job counts and reports them.
    """
    spec = str(spec).strip()
    if not spec:
        raise InputError("--input is empty")
    if not is_valid_name(spec):
        raise InputError(f"--input {printable_name(spec)!r} is not valid UTF-8: rename it")
    named_file = False
    if _GLOB_CHARS.search(spec):
        base = spec[:_GLOB_CHARS.search(spec).start()].rsplit("/", 1)[0]
        pattern, what = spec, f"the glob {spec!r} matches no file"
    elif _is_dir(spec):
        base = spec.rstrip("/")
        pattern, what = base + "/**", f"the input directory {spec!r} contains no file"
    else:
        base = posixpath.dirname(spec.rstrip("/"))
        pattern, what = spec, f"the input {spec!r} does not exist"
        named_file = True
    if is_local(spec) and named_file:
        listed = _stat_named_file(spec)
    elif is_local(spec):
        match = re.compile(FileSystem.translate_pattern(pattern)).match
        listed = [entry for entry in _walk(base, follow_symlinks) if match(entry[0])]
    else:
        try:
            listed = [(meta.path, meta.size_in_bytes, None)
                      for meta in FileSystems.match([pattern])[0].metadata_list]
        except Exception as e:  # Beam raises BeamIOError for a missing directory on some filesystems
            raise InputError(f"{what} ({e})") from e
    inputs = []
    for path, size, skip in listed:
        rel = path[len(base):].lstrip("/") if base and path.startswith(base) else path
        source_id = rel or posixpath.basename(path)
        if not is_valid_name(source_id):
            skip = _bad_name_skip(source_id)
            path = source_id = skip.source_id
        elif skip is not None:
            skip = Skip(source_id, *skip)
        inputs.append(InputFile(path, source_id, 0 if skip else size,
                                is_archive(path) and skip is None, skip))
    if is_local(spec) and named_file and inputs:
        # One named file, which may be a link given on the command line: read its target
        # (reading refuses links), under the name the user gave.
        real = os.path.realpath(spec)
        if not is_valid_name(real):
            raise InputError(f"--input {spec!r} leads to {printable_name(real)!r}, which is not "
                             "valid UTF-8: rename it")
        inputs = [inputs[0]._replace(path=real)]
    if not inputs:
        raise InputError(what)
    return sorted(inputs, key=lambda f: f.source_id)


def _stat_named_file(spec):
    """[(path, size, None)] for one local file named by --input, [] when it does not exist."""
    try:
        st = os.stat(spec)  # the user named it: a link given on the command line is followed
    except OSError:
        return []
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"the input {spec!r} is a {_describe(st.st_mode)}, not a file, "
                         "a directory or a glob")
    return [(spec, st.st_size, None)]


def _walk(top, follow_symlinks):
    """Every entry below the local directory `top`: (path, size, None or (reason, detail)).

    The same paths as Beam's local `FileSystems.match` lists (it walks the directory before
    the first glob character; the caller matches the full path against the pattern as Beam
    does), but from `lstat`, so links and special files are seen for what they are.

    Following links, a linked directory is entered only when it lies outside `top` and was
    not entered before: inside `top` its files are listed under their own paths anyway, and
    this also cuts every loop.
    """
    root = os.path.realpath(top or ".").rstrip("/") + "/"
    out, stack, entered = [], [top], set()
    while stack:
        directory = stack.pop()
        try:
            st = os.stat(directory or ".")  # "": a glob without a directory, e.g. *.jpg
            with os.scandir(directory or ".") as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:  # vanished or unreadable directory: nothing to list (as Beam's walk)
            continue
        entered.add((st.st_dev, st.st_ino))
        for entry in entries:
            path = os.path.join(directory, entry.name)
            link = False
            try:
                st = entry.stat(follow_symlinks=False)
                link = stat.S_ISLNK(st.st_mode)
                if link and not follow_symlinks:
                    out.append((path, 0, (NOT_A_REGULAR_FILE,
                                          f"symbolic link to {printable_name(os.readlink(path))!r}; "
                                          "not followed (--follow_symlinks follows links)")))
                    continue
                if link:
                    st = os.stat(path)
            except FileNotFoundError:
                if link:
                    out.append((path, 0, (NOT_A_REGULAR_FILE, "broken symbolic link")))
                continue  # else: vanished since the scan
            except OSError as e:  # a link loop (ELOOP), a permission...
                out.append((path, 0, (NOT_A_REGULAR_FILE if link else UNREADABLE,
                                      f"{e.strerror}; not read")))
                continue
            if stat.S_ISDIR(st.st_mode):
                if not link:
                    stack.append(path)
                elif (os.path.realpath(path) + "/").startswith(root) \
                        or (st.st_dev, st.st_ino) in entered:
                    out.append((path, 0, (NOT_A_REGULAR_FILE, "symbolic link to a directory "
                                          "listed anyway (inside the input, or a loop); not followed")))
                else:
                    entered.add((st.st_dev, st.st_ino))
                    stack.append(path)
            elif stat.S_ISREG(st.st_mode):
                out.append((path, st.st_size, None))
            else:
                what = _describe(st.st_mode) + (" behind a symbolic link" if link else "")
                out.append((path, 0, (NOT_A_REGULAR_FILE, f"{what}; not read")))
    return out


def _open(path):
    # UNCOMPRESSED: Beam would otherwise transparently gunzip `x.tar.gz`, and tarfile
    # does its own decompression (and must see the real bytes to detect the format).
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def open_input(path, follow_symlinks=True):
    """A binary stream of one input file on any Beam filesystem.

    Local files are checked on the opened descriptor, so nothing between listing and reading
    can substitute something else: a FIFO or device raises `NotARegularFile` without
    blocking or being read (O_NONBLOCK), and so does a symbolic link unless `follow_symlinks`
    (O_NOFOLLOW, which checks the last component: links in the directories above were
    refused by the listing).
    """
    if not is_local(path):
        return _open(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP and not follow_symlinks:
            raise NotARegularFile(e.errno, "symbolic link; not followed", path) from e
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotARegularFile(errno.EINVAL, f"{_describe(mode)}; not read", path)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_file(path, max_bytes=None, follow_symlinks=True):
    """All bytes of one file on any Beam filesystem (see `open_input`).

    max_bytes: read at most this many; a file holding more raises `InputTooLarge` (the size
    the listing saw may be stale or, for a special file, meaningless). Read in pieces with a
    running count: `read(max_bytes + 1)` would reserve 64 MB per file up front, which under
    a data limit (RLIMIT_DATA counts it) failed small reads with MemoryError.
    """
    with open_input(path, follow_symlinks) as f:
        data = f.read() if max_bytes is None else archive_members.read_counted(f, max_bytes)
    if data is None:
        raise InputTooLarge(errno.EFBIG, f"more than {max_bytes} bytes", path)
    return data


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


def iter_archive(archive, follow_symlinks=True):
    """Yields `(source_id, bytes)` for each regular member, or a `Skip` for any other.

    The name checks come first, so an unsafe member (or one whose name is not UTF-8) is never
    even read. A corrupt archive yields what it could read and then one `Skip` for the
    archive itself. A member declaring more than MAX_INPUT_BYTES is skipped unread; the others
    are read in pieces with a running count, never trusting the declared size: a member
    holding more is a skip as soon as the count passes the limit.
    """
    is_zip = archive.path.lower().endswith(ZIP_SUFFIXES)
    try:
        with open_input(archive.path, follow_symlinks) as f:
            for member in archive_members.members(f, is_zip):
                name, safe = member.name, safe_member_name(member.name)
                if not is_valid_name(name):  # tarfile keeps undecodable bytes as surrogates
                    yield _bad_name_skip(safe or name)
                elif safe is None:
                    yield Skip(name, UNSAFE_ARCHIVE_PATH,
                               f"member of {archive.source_id} escapes the archive root; not read")
                elif not member.is_regular:
                    yield Skip(safe, NOT_A_REGULAR_FILE, "link or special file; not read")
                elif member.size > MAX_INPUT_BYTES:
                    yield Skip(safe, FILE_TOO_LARGE, f"{member.size} bytes")
                else:
                    yield _read_member(safe, member)
    # ValueError: e.g. a zip whose name is flagged UTF-8 but is not (UnicodeDecodeError).
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error, ValueError) as e:
        yield Skip(archive.source_id, UNREADABLE_ARCHIVE, f"{type(e).__name__}: {e}")


def _read_member(source_id, member):
    """`(source_id, bytes)` of one archive member, or the `Skip` saying why not."""
    try:
        return source_id, archive_members.read(member, MAX_INPUT_BYTES)
    except archive_members.MemberTooLarge as e:
        return Skip(source_id, FILE_TOO_LARGE, str(e))
    except archive_members.MemberUnreadable as e:
        return Skip(source_id, UNREADABLE, str(e))


def short_error(error, limit=200):
    """The useful last line of a (TF) error message, bounded for a report.

    TF ends a graph error with the op's context, `[[{{node X}}]] [Op:__inference_f_713]`,
    whose number counts the functions traced in the process so far: the line before it says
    what is wrong, the same in every process (report.json is the same on every runner).
    """
    text = getattr(error, "message", None) or str(error)
    lines = [line.strip() for line in text.strip().splitlines()
             if line.strip() and not line.strip().startswith("[[")]
    return (lines[-1] if lines else type(error).__name__)[:limit]


def read_input(item, follow_symlinks=False):
    """The bytes of a listed (non-archive) `InputFile`, or the `Skip` saying why not."""
    if item.skip is not None:  # a link, special file or bad name: known from the listing
        return item.skip
    if item.size is not None and item.size > MAX_INPUT_BYTES:
        return Skip(item.source_id, FILE_TOO_LARGE, f"{item.size} bytes")
    try:
        return read_file(item.path, MAX_INPUT_BYTES, follow_symlinks)
    except NotARegularFile as e:  # became a link or FIFO since the listing
        return Skip(item.source_id, NOT_A_REGULAR_FILE, e.strerror)
    except InputTooLarge as e:  # grew since the listing
        return Skip(item.source_id, FILE_TOO_LARGE, e.strerror)
    except Exception as e:  # any filesystem's error: report it, keep going
        return Skip(item.source_id, UNREADABLE, short_error(e))
