"""Archive members read as streams, counted as they are decompressed: a header's declared
size is never trusted.

`members(fileobj, is_zip)` lists the members of a tar (plain or gzip) or zip stream, and
`read(member, limit)` returns one member's bytes or raises `MemberTooLarge` as soon as more
than `limit` bytes came out of the decompressor (never holding more than limit + 1 MiB), or
`MemberUnreadable`. `agegender.image_sources` turns both into skips.

Why: zipfile's `read()` inflates a member in one call, whatever its header says, so a 2 MB
zip holding 2,097,152,000 zero bytes under a header declaring 1,000 took the records job to
2.9 GB. Read in pieces, zipfile stops at the declared size instead (and then fails the
CRC), which would hide what the member really holds; so a zip member is opened as a copy of
its entry declaring more than the limit, and the count decides.

The libraries stay tarfile and zipfile (maintained, in the standard library); only the
decompressions they cannot bound are refused: bzip2 and LZMA (zip methods 12 and 14, and
tar.bz2 / tar.xz behind any name), which they inflate one compressed read at a time with no
bound on the output (kilobytes of bzip2 can hold gigabytes).
"""
import collections
import copy
import stat
import tarfile
import zipfile
import zlib

# One member: its name in the archive, whether it is a regular file, the size its header
# declares, and `open()` -> a binary stream (for a tar, valid only until the next member).
Member = collections.namedtuple("Member", ["name", "is_regular", "size", "open"])

_PIECE = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"


class MemberUnreadable(Exception):
    """A member that cannot be read (corrupt, encrypted, an unsupported compression)."""


class MemberTooLarge(MemberUnreadable):
    """A member holding more bytes than the limit."""


def members(fileobj, is_zip):
    """The `Member`s of an archive stream, in archive order (directories left out)."""
    return _zip_members(fileobj) if is_zip else _tar_members(fileobj)


def read(member, limit):
    """All bytes of `member`, read in pieces with a running count; raises `MemberTooLarge`
    once more than `limit` come out, `MemberUnreadable` when the data is corrupt or holds
    another size than its header declares."""
    try:
        with member.open(limit) as stream:
            data = read_counted(stream, limit)
    except (zipfile.BadZipFile, RuntimeError, NotImplementedError, zlib.error) as e:
        raise MemberUnreadable(f"{type(e).__name__}: {e}") from None  # encrypted or corrupt
    if data is None:
        raise MemberTooLarge(f"more than {limit:,} bytes once decompressed (its header "
                             f"declares {member.size:,}); read no further")
    if len(data) != member.size:
        raise MemberUnreadable(f"holds {len(data):,} bytes, its header declares "
                               f"{member.size:,}; not used")
    return data


def read_counted(stream, limit):
    """All bytes of a binary stream read in pieces: bytes, or None as soon as there are more
    than `limit`."""
    data = bytearray()
    while True:
        piece = stream.read(min(_PIECE, limit + 1 - len(data)))
        if not piece:
            return bytes(data)
        data += piece
        if len(data) > limit:
            return None


def _tar_members(fileobj):
    # A forward-only stream (works on any Beam filesystem), gzip told from its first bytes:
    # tarfile's "r|*" would take bzip2 and xz as well.
    head = fileobj.read(2)
    mode = "r|gz" if head == _GZIP_MAGIC else "r|"
    with tarfile.open(fileobj=_Prefixed(head, fileobj), mode=mode) as tar:
        for member in tar:
            if not member.isdir():
                # A tar member's size is the length of its data in the (decompressed) stream:
                # what `extractfile` reads, counted all the same.
                yield Member(member.name, member.isfile(), member.size,
                             lambda limit, m=member: tar.extractfile(m))


class _Prefixed:
    """A read-only stream: `head` (already read from `rest`), then the rest of `rest`."""

    def __init__(self, head, rest):
        self._head, self._rest = head, rest

    def read(self, size=-1):
        if not self._head:
            return self._rest.read(size)
        if size is None or size < 0:
            out, self._head = self._head + self._rest.read(), b""
        else:  # a short read: tarfile reads again until it has what it wants
            out, self._head = self._head[:size], self._head[size:]
        return out


def _zip_members(fileobj):
    with zipfile.ZipFile(fileobj) as zf:
        for info in zf.infolist():
            if not info.is_dir():
                # Unix type bits, when the zip has them (a symlink is S_IFLNK); none = file.
                file_type = stat.S_IFMT(info.external_attr >> 16)
                yield Member(info.filename, file_type in (0, stat.S_IFREG), info.file_size,
                             lambda limit, i=info: _open_zip_member(zf, i, limit))


def _open_zip_member(zf, info, limit):
    """A stream of the member's decompressed bytes that does not stop at its declared size
    (a copy of its entry declaring a piece more than the limit: zipfile checks the CRC on
    reaching the declared size, inflating at least 4 KiB at a time, and `read_counted` stops
    one byte past the limit); stored and deflate only."""
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise MemberUnreadable(f"compression method {info.compress_type}: only stored and "
                               "deflate members are read (no bounded bzip2/LZMA reader)")
    unbounded = copy.copy(info)
    unbounded.file_size = limit + 1 + _PIECE
    return zf.open(unbounded)
