"""How the project's commands talk to a terminal: their own lines, without third-party noise.

Before its first useful line, a command used to print a wall of lines from its libraries:
TensorFlow's C++ start-up notices (oneDNN, the CUDA probing of a machine without a GPU,
"All log messages before absl::InitializeLog()..."), written to the process's stderr file
descriptor before any Python logging setting can apply, and repeated by every Beam worker
process ("apitools not found", "No semi_persistent_directory found", "Discarding
unparseable args": Beam's warnings are logging records, lines like the others). `quiet()`
(run by each command before TensorFlow or Beam is imported) filters those lines out of file
descriptor 2 itself: child processes inherit it, so their lines go through the same filter.
Everything else passes, errors and the project's own INFO lines included. `-v` or
`--verbosity=1` (every command, argparse or absl) or AGEGENDER_VERBOSE=1 keeps everything.
What is filtered is the list `NOISE`: known lines only, never a blanket level.

Every command switches it on the same way, as the first statement of its module when run as
a program (TensorFlow prints at import, so `main()` would be too late):

    if __name__ == "__main__":  # before TensorFlow's start-up lines (agegender.console)
        from agegender import console
        console.quiet()

`-v/--verbosity` means the same in every command: absl commands have it from absl
(`--verbosity=N`, `-v N`), argparse commands register it with `add_verbose_flag` (`-v`
counts, `--verbosity=N` sets N). 0, the default: the project's own lines; 1 or more: every
library's lines too. `Progress` prints the "so far" lines of steps that take more than a few
seconds.
"""
import argparse
import atexit
import os
import re
import sys
import threading
import time

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
    # Beam's worker processes, at start-up.
    r"^INFO:__main__:Logging handler created\.$",
    # TensorFlow at every checkpoint, and at the end of every tf.data iteration.
    r"functional_saver\.py:\d+\] Sharding callback duration",
    r"Local rendezvous is aborting with status: OUT_OF_RANGE: End of sequence",
    # TensorFlow's graph optimizer on ops it has no cost model for (crops in tf.data).
    r"op_level_cost_estimator\.cc:\d+\] Error in PredictCost\(\) for the op",
    r"Input of GeneratorDatasetOp::Dataset will not be optimized",
    # The LiteRT converter and runtime.
    r"tf_tfl_flatbuffer_helpers\.cc:\d+\] Ignored (output_format|drop_control_dependency)",
    r"^INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.$",
    # Beam's RunInference at every model load without torch installed (2.78: its optional
    # ModelManager import failing also unsets `resource`), pipeline.annotate.
    r"Resource module is not available for current platform, memory usage cannot be",
))
PROGRESS_SECONDS = 5.0  # at most one progress line per step and process this often
VERBOSE_ENV = "AGEGENDER_VERBOSE"

_installed = None


def is_noise(line):
    return any(p.search(line) for p in NOISE)


def _int(text):
    try:
        return int(text)
    except ValueError:
        return None


def requested_verbosity(argv=None):
    """The verbosity level the command line asks for, read as the command will (0 when not
    given; the last setting wins, each `-v` adds one, as argparse counts them).

    Forms: argparse commands' `-v` (repeatable: `-vv` is 2) and `--verbosity=N`, and the
    old switch `--verbose` (one more); absl commands' `--verbosity=N` / `--verbosity N` /
    `-v N` / `-v=N` (absl's short name takes a level). A `--verbose` followed by a number is
    the trainer's old spelling of its Keras progress (`--keras_progress`), not this flag.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    level = 0
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        name, eq, value = arg.partition("=")
        following = argv[i + 1] if i + 1 < len(argv) else ""
        if name in ("-v", "--v", "-verbosity", "--verbosity"):
            given = _int(value if eq else following)
            if given is not None:
                level = given
            elif name == "-v" and not eq:
                level += 1  # argparse's -v
        elif re.fullmatch(r"-v+", arg):
            level += len(arg) - 1  # argparse's -vv...
        elif arg == "--verbose" and _int(following) is None:
            level += 1
    return level


def verbose_requested(argv=None):
    """True when the environment (AGEGENDER_VERBOSE=1) or the command line (a verbosity of 1
    or more: `requested_verbosity`) asks for every library's lines."""
    if os.environ.get(VERBOSE_ENV, "") not in ("", "0"):
        return True
    return requested_verbosity(argv) >= 1


class _OldVerboseSwitch(argparse.Action):
    """`--verbose`, the old switch: one more level, as `-v`, with a deprecation warning."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from agegender import arg_types

        arg_types.warn_renamed([option_string], {option_string: "-v"})
        setattr(namespace, self.dest, (getattr(namespace, self.dest, None) or 0) + 1)


def add_verbose_flag(parser, also=""):
    """Registers `-v/--verbosity` on an argparse parser, as `quiet()` reads it: `-v` counts
    (`-vv` is 2), `--verbosity=N` sets a level >= 0 (absl's meaning: 0, the default, the
    project's own lines; 1 or more, every library's lines too). `args.verbose` holds the
    level (0 is false). The old switch `--verbose` still works, as `-v`, and warns."""
    from agegender import arg_types

    more = (f"also show the libraries' start-up notices and warnings{also} "
            f"({VERBOSE_ENV}=1 does the same)")
    parser.add_argument("-v", action="count", dest="verbose", default=0,
                        help=f"{more}; -v is --verbosity=1")
    parser.add_argument("--verbosity", dest="verbose", default=0, metavar="N",
                        type=arg_types.at_least(0, "a verbosity level"),
                        help="0 (default): the command's own lines; 1 or more: as -v")
    parser.add_argument("--verbose", action=_OldVerboseSwitch, dest="verbose", default=0,
                        help=argparse.SUPPRESS)


def command_error(command, message):
    """`command: error: message` on stderr, as argparse says it; returns 2, its exit status."""
    print(f"{command}: error: {message}", file=sys.stderr)
    return 2


def add_progress_flag(parser, counted):
    """`--progress_seconds` of a Beam job: how often each worker says how many `counted` it
    has done (`Progress`), on stderr; 0: never."""
    parser.add_argument("--progress_seconds", type=float, default=PROGRESS_SECONDS,
                        help=f"each worker prints {counted} so far this often, on stderr; "
                             "0: never (default %(default)s)")


def quiet(verbose=None):
    """Filters `NOISE` out of this process's stderr (fd 2), for it and its children.

    Idempotent; a no-op when verbose (argument, `-v` or `--verbosity=N` with N >= 1 on the
    command line, or AGEGENDER_VERBOSE=1). Also sets TF_CPP_MIN_LOG_LEVEL=1 (TensorFlow's
    C++ INFO lines) unless the user set it, and tells child processes to stay quiet too.
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


class Progress:
    """A sign of life for a long step: "<what>: <count>[ of <total>] <unit> so far (<rate>/s)"
    on stderr, at most every `every` seconds (the first `every` seconds after the start, so a
    short step prints none) and never once `total` is reached (the step's own summary says
    that). Few enough lines for a log; stdout keeps the results."""

    def __init__(self, what, unit, total=None, every=PROGRESS_SECONDS, out=None,
                 clock=time.monotonic):
        self.what, self.unit, self.total, self.every = what, unit, total, every
        self.count = 0
        self._out = out
        self._clock = clock
        self._start = self._last = clock()

    def add(self, n=1):
        self.count += n
        now = self._clock()
        done = self.total is not None and self.count >= self.total
        if self.every > 0 and not done and now - self._last >= self.every:
            self._last = now
            rate = self.count / max(now - self._start, 1e-9)
            total = f" of {self.total}" if self.total else ""
            print(f"{self.what}: {self.count}{total} {self.unit} so far ({rate:.0f}/s)",
                  file=self._out or sys.stderr, flush=True)
