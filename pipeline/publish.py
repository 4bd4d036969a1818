"""Publishing the records directory whole: one run at a time, staged, switched in at the end.

`Publication(output_dir)`, a context manager (`build_records.main` runs the job inside it):

1. takes the output directory's lock, or raises `OutputDirBusy` naming the run holding it;
2. refuses (`OutputDirError`) an output directory holding files a records directory does
   not have (`writer.owns`), since it is replaced as a whole;
3. removes what killed runs left beside it (their staging directories);
4. makes a fresh `staging` directory beside it, where the job writes everything (shards,
   TFDS metadata, report.json);
5. `publish()` switches the staging directory into place. Leaving the block without it (an
   error) leaves the output directory as it was.

So a reader of the output directory sees the previous complete dataset or the new complete
one, never a mix, wherever the run is killed; and a second run into the same directory is
refused instead of silently replacing the first one's shards under it.

What is guaranteed where:
- Local filesystem: the lock is flock(2) on `<output_dir>.lock`, which the kernel releases
  when the process dies, so a killed run never leaves it stuck. The switch is a single
  renameat2(RENAME_EXCHANGE) of the two directories: atomic. Where the kernel, libc or
  filesystem lacks it, two renames, between which the output directory is briefly absent (a
  reader then finds no dataset, never a mix).
- Other filesystems (gs://, s3://..., through tf.io.gfile): no atomic directory rename and no
  lock primitive. The lock is a file holding host, pid and a token, written and read back: two
  runs starting within the same half second can both pass. A lock whose pid is gone on this
  host is taken over; one from another host stays until removed by hand (the error says so).
  The switch deletes report.json and dataset_info.json first, then the old shards, moves the
  new files in and writes the metadata last: a reader that needs the metadata (TFDS,
  `agegender.records.metadata` in the trainer) never sees a mix; one that only globs shards can,
  during the switch.
"""
import ctypes
import errno
import json
import os
import posixpath
import re
import shutil
import socket
import time
import uuid

from agegender import schema
from agegender import image_sources as sources
from pipeline import writer

LOCK_SUFFIX = ".lock"
_STAGING = ".staging-"
_OLD = ".old-"


class OutputDirBusy(RuntimeError):
    """Another run holds the output directory's lock."""


class OutputDirError(ValueError):
    """The output directory cannot be replaced as a whole (not a directory, foreign files)."""


def _holder_text():
    return json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                       "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                       "token": uuid.uuid4().hex})


def _busy(output_dir, lock_path, holder, advice="wait for it to finish or choose another directory"):
    try:
        info = json.loads(holder)
        who = f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (ValueError, KeyError, TypeError):
        who = "another run"
    return OutputDirBusy(f"--output_dir {output_dir!r} is being written by {who} "
                         f"(lock {lock_path}); {advice}")


class Publication:
    """See the module docstring. `staging` is set inside the `with` block."""

    def __init__(self, output_dir, owns=writer.owns, metadata_files=writer.METADATA_FILES,
                 kind="a records directory", flag="--output_dir"):
        """owns(name): whether a file name is one the job writes (default: a records
        directory's, `writer.owns`); metadata_files: the names readers check, moved last
        where directories cannot be switched; kind, flag: how errors name the directory.
        `pipeline.annotate` passes its own."""
        self.output_dir = str(output_dir).rstrip("/") or "/"
        self._owns, self._metadata_files = owns, tuple(metadata_files)
        self._kind, self._flag = kind, flag
        self._local = sources.is_local(self.output_dir)
        # Locally the switch happens where the directory really is (a symlinked output
        # directory stays a link to the new data, on its own filesystem).
        self._target = (os.path.realpath(self.output_dir) if self._local else self.output_dir)
        self._lock_path = self._target + LOCK_SUFFIX
        self.staging = None
        self._lock_fd = self._token = None
        self._published = False

    # -- the block ---------------------------------------------------------------------

    def __enter__(self):
        self._lock()
        try:
            self._check_target()
            for leftover in self._leftovers():
                self._rmtree(leftover)
            self.staging = f"{self._target}{_STAGING}{uuid.uuid4().hex}"
            self._makedirs(self.staging)
        except BaseException:
            self._unlock()
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            # A failed run's report (e.g. inputs unaccounted for) is kept for diagnosis; the
            # next run into this directory removes it.
            if not self._published and self.staging and not self._exists(
                    f"{self.staging}/{schema.REPORT_FILE}"):
                self._rmtree(self.staging)
        finally:
            self._unlock()
        return False

    def publish(self):
        """Switches the staged records into place (the end of a successful run)."""
        if self._local:
            _switch_local(self.staging, self._target)
        else:
            _switch_by_moving(self.staging, self._target, self._owns, self._metadata_files)
        self._published = True

    # -- lock --------------------------------------------------------------------------

    def _lock(self):
        parent = posixpath.dirname(self._target)
        if parent:
            self._makedirs(parent)
        if not self._local:
            return self._lock_by_file()
        import fcntl

        while True:
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode("utf-8", "replace")
                os.close(fd)
                raise _busy(self.output_dir, self._lock_path, holder) from None
            # The holder unlinks the file as it releases it: if that happened between our
            # open and flock, this lock is on a name nobody else sees. Start again.
            try:
                current = os.path.samestat(os.fstat(fd), os.stat(self._lock_path))
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, _holder_text().encode(), 0)
        self._lock_fd = fd

    def _lock_by_file(self):
        import tensorflow as tf

        if tf.io.gfile.exists(self._lock_path):
            with tf.io.gfile.GFile(self._lock_path) as f:
                holder = f.read()
            if not _dead_here(holder):
                raise _busy(self.output_dir, self._lock_path, holder, *(() if _from_here(holder) else (
                    f"wait for it to finish, or delete {self._lock_path} if no run is writing "
                    "there any more (a run on another host cannot be checked from here)",)))
        text = _holder_text()
        with tf.io.gfile.GFile(self._lock_path, "w") as f:
            f.write(text)
        time.sleep(0.5)  # a run that started at the same moment has written its lock by now
        with tf.io.gfile.GFile(self._lock_path) as f:
            holder = f.read()
        if holder != text:
            raise _busy(self.output_dir, self._lock_path, holder)
        self._token = text

    def _unlock(self):
        if self._lock_fd is not None:
            # Unlink before closing: a waiting run re-checks the name (see _lock).
            os.unlink(self._lock_path)
            os.close(self._lock_fd)
            self._lock_fd = None
        elif self._token is not None:
            import tensorflow as tf

            with tf.io.gfile.GFile(self._lock_path) as f:
                ours = f.read() == self._token  # else taken over: not ours to remove
            if ours:
                tf.io.gfile.remove(self._lock_path)
            self._token = None

    # -- the directory -----------------------------------------------------------------

    def _check_target(self):
        if not self._exists(self._target):
            return
        if not self._isdir(self._target):
            raise OutputDirError(f"{self._flag} {self.output_dir!r} exists and is not a directory")
        foreign = sorted(n for n in self._listdir(self._target) if not self._owns(n))
        if foreign:
            raise OutputDirError(
                f"{self._flag} {self.output_dir!r} holds files {self._kind} does not "
                f"have ({', '.join(repr(sources.printable_name(n)) for n in foreign[:5])}"
                f"{', ...' if len(foreign) > 5 else ''}); the run replaces the directory as a "
                f"whole, so choose a new or empty directory, or {self._kind}")

    def _leftovers(self):
        """Staging (and half-switched old) directories of runs that were killed."""
        parent, name = posixpath.split(self._target)
        own = re.compile(re.escape(name) + f"({re.escape(_STAGING)}|{re.escape(_OLD)})[0-9a-f]{{32}}")
        return [posixpath.join(parent, n) for n in self._listdir(parent or ".")
                if own.fullmatch(n)]

    def _exists(self, path):
        if self._local:
            return os.path.lexists(path)
        import tensorflow as tf

        return tf.io.gfile.exists(path)

    def _isdir(self, path):
        if self._local:
            return os.path.isdir(path)
        import tensorflow as tf

        return tf.io.gfile.isdir(path)

    def _listdir(self, path):
        if self._local:
            return os.listdir(path)
        import tensorflow as tf

        return [n.rstrip("/") for n in tf.io.gfile.listdir(path)] if tf.io.gfile.isdir(path) else []

    def _makedirs(self, path):
        if self._local:
            os.makedirs(path, exist_ok=True)
        else:
            import tensorflow as tf

            tf.io.gfile.makedirs(path)

    def _rmtree(self, path):
        if self._local:
            shutil.rmtree(path, ignore_errors=True)
        else:
            import tensorflow as tf

            if tf.io.gfile.exists(path):
                tf.io.gfile.rmtree(path)


def _from_here(holder):
    try:
        return json.loads(holder)["host"] == socket.gethostname()
    except (ValueError, KeyError, TypeError):
        return False


def _dead_here(holder):
    """Whether a lock file was left by a process of this host that no longer runs."""
    if not _from_here(holder):
        return False
    try:
        os.kill(int(json.loads(holder)["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, KeyError, TypeError):
        return False
    return False


# -- switching -----------------------------------------------------------------------------

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def exchange(a, b):
    """Atomically swaps two local paths (Linux renameat2); False where that is unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # not glibc >= 2.28 / not Linux
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # e.g. a filesystem without it
        return False
    raise OSError(err, os.strerror(err), a)


def _switch_local(staging, target):
    if not os.path.lexists(target):
        os.rename(staging, target)
        return
    if exchange(staging, target):
        shutil.rmtree(staging)  # which now holds the previous dataset
        return
    old = f"{target}{_OLD}{uuid.uuid4().hex}"
    os.rename(target, old)
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old)


def _switch_by_moving(staging, target, owns=writer.owns, metadata_files=writer.METADATA_FILES):
    import tensorflow as tf

    tf.io.gfile.makedirs(target)
    for name in reversed(metadata_files):  # invalidate the old dataset first
        if tf.io.gfile.exists(f"{target}/{name}"):
            tf.io.gfile.remove(f"{target}/{name}")
    for name in tf.io.gfile.listdir(target):
        name = name.rstrip("/")
        if owns(name):
            path = f"{target}/{name}"
            (tf.io.gfile.rmtree if tf.io.gfile.isdir(path) else tf.io.gfile.remove)(path)
    names = [n.rstrip("/") for n in tf.io.gfile.listdir(staging)]
    order = {n: i for i, n in enumerate(metadata_files)}
    for name in sorted(names, key=lambda n: (order.get(n, -1), n)):
        tf.io.gfile.rename(f"{staging}/{name}", f"{target}/{name}", overwrite=True)
    tf.io.gfile.rmtree(staging)
