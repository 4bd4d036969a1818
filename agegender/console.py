"""How the project's commands talk to a terminal: their own lines, without third-party noise.

Before its first useful line, a command used to print a wall of lines from its libraries:
TensorFlow's C++ start-up notices (oneDNN, the CUDA probing of a machine without a GPU,
"All log messages before absl::InitializeLog()..."), written to the process's stderr file
descriptor before any Python logging setting can apply, and repeated by every Beam worker
process ("apitools not found", "No semi_persistent_directory found", "Discarding
unparseable args"). `quiet()` (the first thing each command's main does, before TensorFlow
or Beam is imported) filters those lines out of file descriptor 2 itself: child processes
inherit it, so their lines go through the same filter. Everything else passes, errors and
the project's own INFO lines included. `--verbosity=1` (or AGEGENDER_VERBOSE=1) keeps
everything. What is filtered is the list `NOISE`: known lines only, never a blanket level.
"""
import atexit
import os
import re
import sys
import threading

# One pattern per known line, matched anywhere in it.
NOISE = tuple(re.compile(p) for p in (
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"oneDNN custom operations are on",
    r"cudart_stub\.cc.*Could not find cuda drivers",
    r"cuda_platform\.cc.*failed call to cuInit",
    r"cuda_executor\.cc|cuda_diagnostics\.cc|gpu_device\.cc.*Cannot dlopen",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
    r"computation placer already registered",
    r"This TensorFlow binary is optimized to use available CPU instructions",
    r"To enable the following instructions: .* rebuild TensorFlow",
    r"TF-TRT Warning: Could not find TensorRT",
    r"apitools not found, and bigquery client libraries are not available",
    r"No semi_persistent_directory found",
    r"Discarding unparseable args",
    r"Discarding invalid overrides",
    r"Unable to register (cuDNN|cuFFT|cuBLAS)",
))
VERBOSE_ENV = "AGEGENDER_VERBOSE"

_installed = None


def is_noise(line):
    return any(p.search(line) for p in NOISE)


def verbose_requested(argv=None):
    """True when the command line or the environment asks for every library's lines."""
    argv = sys.argv[1:] if argv is None else argv
    flags = {"-v", "--verbose", "--verbosity=1", "--verbosity=2", "--verbose=true"}
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0") or any(a in flags for a in argv)


def quiet(verbose=None):
    """Filters `NOISE` out of this process's stderr (fd 2), for it and its children.

    Idempotent; a no-op when verbose (argument, `-v/--verbose/--verbosity=1` on the command
    line, or AGEGENDER_VERBOSE=1). Also sets TF_CPP_MIN_LOG_LEVEL=1 (TensorFlow's C++ INFO
    lines) unless the user set it, and tells child processes to stay quiet too.
    """
    global _installed
    if _installed is not None:
        return
    if verbose is None:
        verbose = verbose_requested()
    if verbose:
        os.environ[VERBOSE_ENV] = "1"  # children keep everything too
        _installed = False
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    _installed = _StderrFilter()


class _StderrFilter:
    """fd 2 -> a pipe; a thread copies its lines to the real stderr unless they are noise."""

    def __init__(self):
        sys.stderr.flush()
        self._real = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
        self._reader = os.fdopen(read_end, "rb", buffering=0)
        self._out = os.fdopen(self._real, "wb", buffering=0, closefd=False)
        self._thread = threading.Thread(target=self._copy, name="stderr-filter", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def _copy(self):
        pending = b""
        while True:
            chunk = self._reader.read(65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                self._write(line + b"\n")
        if pending:
            self._write(pending)

    def _write(self, line):
        if not is_noise(line.decode("utf-8", "replace")):
            self._out.write(line)

    def close(self):
        """Puts the real stderr back and lets the thread copy what is left (children that
        still hold the pipe keep it open: the thread is not waited for longer than 2 s)."""
        try:
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 (closing at exit: nothing to report to)
            pass
        os.dup2(self._real, 2)
        self._thread.join(timeout=2)
