"""The local server (and the demo's web page) as a child process, for the demo, the
benchmarks and the tests.

`ServerProcess(model_base_path, flags=...)` runs `python -m serving.server` on free loopback
ports, waits until it serves (the server prints one "serving model ..." line once the
newest version is loaded and warmed up), keeps its output flowing (into a log file, or
the last lines kept in memory, so it never blocks on a full pipe), and stops it with
SIGTERM (then SIGKILL after a grace period). Production runs TF Serving itself.
`ChildProcess(command, ready)` does the same for any command that prints a ready line
(the demo's `python -m web.app`, which prints "page: <address> ...").

`data_limit` caps the child's RLIMIT_DATA (tests of hostile requests). The child sets it on
itself before it execs the server, rather than through Popen's preexec_fn: a preexec_fn
makes Popen fork the caller, and in a caller that runs gRPC (an in-process server, a
client) gRPC's fork handlers restart its poller thread in the forked child, which aborts on
the descriptors Popen closes before exec (seen as "epoll_wait error: Bad file descriptor",
status -6, now and then).
"""
import collections
import os
import signal
import socket
import subprocess
import sys
import threading

from agegender import serving_contract as contract

# The project root: where `python -m serving.server` finds this very package.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
READY = "serving model"
# Run as `python -c _LIMITED <limit> <argv...>`: sets RLIMIT_DATA, then becomes `python <argv>`.
_LIMITED = ("import os, resource, sys; n = int(sys.argv[1]); "
            "resource.setrlimit(resource.RLIMIT_DATA, (n, n)); "
            "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])")


class ServerProcessError(RuntimeError):
    """The child exited or did not serve in time; the message ends with its last output."""


def free_port(host="127.0.0.1"):
    """A TCP port free on `host` now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ChildProcess:
    """One command in a child process (cwd: the project root, which is on its PYTHONPATH)
    that prints a line holding `ready` once it serves; `name` says what it is in errors."""

    def __init__(self, command, ready, *, name="the child process", log_path=None, env=None):
        self.command = list(command)
        self.ready, self.name = ready, name
        self.log_path = log_path
        path = [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        self._env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), **(env or {})}
        self.proc = None
        self.ready_line = None
        self._tail = collections.deque(maxlen=20)
        self._log = None

    def start(self, timeout=180):
        """Starts the child and returns once it serves; `ServerProcessError` otherwise."""
        self._log = open(self.log_path, "w") if self.log_path else None
        self.proc = subprocess.Popen(
            self.command, cwd=ROOT, env=self._env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        reader = threading.Thread(target=self._read_until_ready, daemon=True)
        reader.start()
        reader.join(timeout)
        if self.ready_line is None:
            self.stop()
            what = ("exited with status %s" % self.proc.returncode
                    if self.proc.returncode not in (None, -signal.SIGTERM)
                    else f"did not serve within {timeout:.0f} s")
            raise ServerProcessError(f"{self.name} {what}: {' '.join(self.command)}\n"
                                     + self.output())
        threading.Thread(target=self._drain, daemon=True).start()
        return self

    def _read_until_ready(self):
        for line in self.proc.stdout:
            self._keep(line)
            if self.ready in line:
                self.ready_line = line.strip()
                return

    def _drain(self):
        for line in self.proc.stdout:
            self._keep(line)

    def _keep(self, line):
        self._tail.append(line.rstrip())
        if self._log:
            self._log.write(line)
            self._log.flush()

    def output(self):
        """The child's last lines (stdout and stderr; all of them go to `log_path`)."""
        return "\n".join(self._tail)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def memory(self):
        """{VmHWM, VmData, VmRSS: kB} of the child process (Linux)."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return {k: int(fields[k].split()[0]) for k in ("VmHWM", "VmData", "VmRSS")}

    def stop(self, timeout=30):
        """SIGTERM (a server drains and exits), SIGKILL after `timeout`; the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log:
            self._log.close()
            self._log = None
        return self.proc.returncode

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class ServerProcess(ChildProcess):
    """One `python -m serving.server` child on free loopback ports; `flags` are passed as
    they are; `data_limit`: the child's RLIMIT_DATA in bytes (None: inherited). Its log
    level is the server's own choice (agegender.console: quiet unless AGEGENDER_VERBOSE)."""

    def __init__(self, model_base_path, model_name=contract.DEFAULT_MODEL_NAME, flags=(), *,
                 log_path=None, data_limit=None, env=None):
        self.grpc_port, self.rest_port = free_port(), free_port()
        self.model_name = model_name
        limit = [] if data_limit is None else ["-c", _LIMITED, str(int(data_limit))]
        super().__init__(
            [sys.executable, *limit, "-m", "serving.server",
             f"--model_base_path={model_base_path}", f"--model_name={model_name}",
             "--host=127.0.0.1", f"--port={self.grpc_port}",
             f"--rest_api_port={self.rest_port}", *flags],
            READY, name="the server", log_path=log_path, env=env)

    @property
    def grpc_address(self):
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def rest_address(self):
        return f"127.0.0.1:{self.rest_port}"
