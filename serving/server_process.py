"""The local server as a child process, for the demo, the benchmarks and the tests.

`ServerProcess(model_base_path, flags=...)` runs `python -m serving.server` on free loopback
ports, waits until it serves (the server prints one "serving model ..." line once the
newest version is loaded and warmed up), keeps its output flowing (into a log file, or
the last lines kept in memory, so it never blocks on a full pipe), and stops it with
SIGTERM (then SIGKILL after a grace period). Production runs TF Serving itself.
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


class ServerProcessError(RuntimeError):
    """The server exited or did not serve in time; the message ends with its last output."""


def free_port(host="127.0.0.1"):
    """A TCP port free on `host` now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerProcess:
    """One `python -m serving.server` child; `flags` are passed as they are."""

    def __init__(self, model_base_path, model_name=contract.DEFAULT_MODEL_NAME, flags=(), *,
                 log_path=None, preexec_fn=None, env=None):
        self.grpc_port, self.rest_port = free_port(), free_port()
        self.model_name = model_name
        self.command = [sys.executable, "-m", "serving.server",
                        f"--model_base_path={model_base_path}", f"--model_name={model_name}",
                        "--host=127.0.0.1", f"--port={self.grpc_port}",
                        f"--rest_api_port={self.rest_port}", *flags]
        self.log_path = log_path
        self._preexec_fn = preexec_fn
        path = [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        self._env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
                     "PYTHONPATH": os.pathsep.join(path), **(env or {})}
        self.proc = None
        self.ready_line = None
        self._tail = collections.deque(maxlen=20)
        self._log = None

    @property
    def grpc_address(self):
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def rest_address(self):
        return f"127.0.0.1:{self.rest_port}"

    def start(self, timeout=180):
        """Starts the server and returns once it serves; `ServerProcessError` otherwise."""
        self._log = open(self.log_path, "w") if self.log_path else None
        self.proc = subprocess.Popen(
            self.command, cwd=ROOT, env=self._env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, preexec_fn=self._preexec_fn)
        reader = threading.Thread(target=self._read_until_ready, daemon=True)
        reader.start()
        reader.join(timeout)
        if self.ready_line is None:
            self.stop()
            what = ("exited with status %s" % self.proc.returncode
                    if self.proc.returncode not in (None, -signal.SIGTERM)
                    else f"did not serve within {timeout:.0f} s")
            raise ServerProcessError(f"the server {what}: {' '.join(self.command)}\n"
                                     + self.output())
        threading.Thread(target=self._drain, daemon=True).start()
        return self

    def _read_until_ready(self):
        for line in self.proc.stdout:
            self._keep(line)
            if READY in line:
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
        """The server's last lines (stdout and stderr; all of them go to `log_path`)."""
        return "\n".join(self._tail)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def memory(self):
        """{VmHWM, VmData, VmRSS: kB} of the server process (Linux)."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return {k: int(fields[k].split()[0]) for k in ("VmHWM", "VmData", "VmRSS")}

    def stop(self, timeout=30):
        """SIGTERM (the server drains and exits), SIGKILL after `timeout`; the exit status."""
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
