"""`make demo`: the whole product end to end on a folder of UTKFace images.

records -> train (short CPU configuration; the trainer evaluates on the validation split)
-> export -> local server -> REST and gRPC queries printing "predicted age / true age" ->
the test split's evaluation report (`evaluation.evaluate --split=test`, the demo's one
read of the test split's figures) -> the web page (one photo through it) -> its address,
last.

Every step is a real command a user could run by hand (printed before it runs); the
first failure stops the demo and names the failing step. The commands are quiet (their own
lines only, agegender.console; -v shows the libraries' lines too). The server and the page
are stopped when the demo ends, unless --keep_page: then they run until Ctrl-C.
"""
import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run as a script: the project's packages come from the checkout

from agegender import console  # noqa: E402

if __name__ == "__main__":  # before TensorFlow's start-up lines (agegender.console)
    console.quiet()

from agegender import arg_types, serving_contract  # noqa: E402
from serving.server_process import (  # noqa: E402
    ChildProcess, ServerProcess, ServerProcessError)

SHARED_UTK = os.path.join(ROOT, "..", "shared", "data", "utkface", "UTKFace")
MODEL_NAME = serving_contract.DEFAULT_MODEL_NAME


class StepFailed(Exception):
    pass


class Demo:
    def __init__(self, args):
        self.args = args
        self.out = os.path.abspath(args.out)
        self.records = os.path.join(self.out, "records")
        self.job_dir = os.path.join(self.out, "run")
        self.models = os.path.join(self.out, "models", MODEL_NAME)
        self.report = os.path.join(self.out, "report")
        self.server = ServerProcess(self.models, MODEL_NAME,
                                    log_path=os.path.join(self.out, "server.log"))
        # web.app prints "page: <address> -> model ..." once it listens.
        self.page = ChildProcess(
            [sys.executable, "-m", "web.app", f"--server={self.server.rest_address}",
             f"--model_name={MODEL_NAME}", f"--port={args.page_port}"],
            "page: ", name="the web page", log_path=os.path.join(self.out, "page.log"))
        self.page_url = None
        self.steps = [
            ("records", self.build_records),
            ("train", self.train),
            ("export", self.export),
            ("serve", self.start_server),
            ("query REST", lambda: self.query("rest")),
            ("query gRPC", lambda: self.query("grpc")),
            ("evaluate", self.evaluate),
            ("web page", self.start_page),
        ]
        self.timings = []

    def run_cmd(self, cmd):
        print("$ " + " ".join(cmd), flush=True)
        # The commands inherit the quiet (or verbose) choice: agegender.console.
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        result = subprocess.run(cmd, cwd=ROOT, env=env)
        if result.returncode != 0:
            raise StepFailed(f"command exited with status {result.returncode}")

    def input_dir(self):
        if not self.args.limit:
            return self.args.data
        # A deterministic slice spread over the whole folder (every k-th name), as links.
        files = sorted(f for f in os.listdir(self.args.data)
                       if os.path.isfile(os.path.join(self.args.data, f)))
        step = max(1, len(files) // self.args.limit)
        slice_dir = os.path.join(self.out, "data_slice")
        shutil.rmtree(slice_dir, ignore_errors=True)
        os.makedirs(slice_dir)
        for name in files[::step][:self.args.limit]:
            os.symlink(os.path.abspath(os.path.join(self.args.data, name)),
                       os.path.join(slice_dir, name))
        return slice_dir

    def build_records(self):
        shutil.rmtree(self.records, ignore_errors=True)
        # --follow_symlinks: a --limit slice is a directory of links to the shared faces (the
        # job skips links by default).
        self.run_cmd([sys.executable, "-m", "pipeline.build_records", "--follow_symlinks",
                      f"--input={self.input_dir()}", f"--output_dir={self.records}"])

    def train(self):
        shutil.rmtree(self.job_dir, ignore_errors=True)
        shared_weights = os.path.join(ROOT, "..", "shared", "weights")
        if not os.environ.get("AGEGENDER_WEIGHTS_DIR") and os.path.isdir(shared_weights):
            # The machines here cannot download Keras weights; ../shared has them.
            os.environ["AGEGENDER_WEIGHTS_DIR"] = os.path.abspath(shared_weights)
        self.run_cmd([sys.executable, "-m", "trainer.task", f"--flagfile={self.args.config}",
                      f"--records_dir={self.records}", f"--job_dir={self.job_dir}"])

    def export(self):
        shutil.rmtree(self.models, ignore_errors=True)
        self.run_cmd([sys.executable, "-m", "export.export_model", f"--model={self.job_dir}",
                      f"--output_dir={self.models}"])

    @staticmethod
    def _start(child, timeout):
        """Starts a background child (printed as the command a user would type)."""
        print("$ " + " ".join(child.command) + " &", flush=True)
        try:
            child.start(timeout=timeout)
        except ServerProcessError as e:
            raise StepFailed(str(e)) from None

    def start_server(self):
        self._start(self.server, 180)
        print(f"server ready: gRPC {self.server.grpc_address}, REST {self.server.rest_address} "
              f"(log: {self.server.log_path})", flush=True)

    def sample_images(self):
        """A few test-split faces (never seen in training), as the original files."""
        import itertools

        from agegender import records, schema

        data = os.path.join(self.out, "data_slice") if self.args.limit else self.args.data
        picks = []
        for example in itertools.islice(records.iter_examples(self.records, "test"), 200):
            source = example[schema.IMAGE_SOURCE_ID].decode()
            path = os.path.join(data, source)
            if os.path.isfile(path):
                picks.append(path)
            if len(picks) == self.args.queries:
                break
        if not picks:
            raise StepFailed(f"no test-split image found under {data}")
        return picks

    def query(self, protocol):
        address = self.server.rest_address if protocol == "rest" else self.server.grpc_address
        self.run_cmd([sys.executable, "-m", "serving.client", f"--server={address}",
                      f"--protocol={protocol}", f"--model_name={MODEL_NAME}",
                      *self.sample_images()])

    def evaluate(self):
        """The report: the exported model on the test split, evaluated once, by name."""
        self.run_cmd([sys.executable, "-m", "evaluation.evaluate", f"--model={self.models}",
                      f"--records_dir={self.records}", "--split=test",
                      f"--output_dir={self.report}"])

    def start_page(self):
        self._start(self.page, 120)
        self.page_url = self.page.ready_line.split()[1]
        self.try_page(self.sample_images()[0])

    def try_page(self, photo):
        """One photo through the page, as its browser side sends it."""
        url = urllib.parse.urljoin(self.page_url, "api/predict")
        print(f"$ curl --data-binary @{photo} {url}", flush=True)
        address = urllib.parse.urlsplit(url)
        with open(photo, "rb") as f:
            body = f.read()
        conn = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
        try:
            conn.request("POST", address.path, body, {"Content-Type": "image/jpeg"})
            response = conn.getresponse()
            status, payload = response.status, json.loads(response.read() or b"{}")
        except (OSError, http.client.HTTPException, ValueError) as e:
            raise StepFailed(f"the page did not answer: {e}") from None
        finally:
            conn.close()
        if status != 200:
            raise StepFailed(f"the page answered {status}: {payload.get('error', payload)} "
                             f"(log: {self.page.log_path})")
        faces = payload.get("faces", [])
        described = "; ".join(
            ("age ?" if face.get("age") is None else f"age {face['age']:.1f}")
            + {"M": ", male", "F": ", female"}.get(face.get("gender"), "") for face in faces)
        print(f"{os.path.basename(photo)}: {len(faces)} face(s) found by the page"
              + (f": {described}" if faces else ""), flush=True)

    def stop_all(self):
        self.page.stop()
        self.server.stop()

    def wait_for_interrupt(self):
        """--keep_page: the page and the server run until Ctrl-C (or SIGTERM)."""
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        while not stop.wait(1):
            for child in (self.server, self.page):
                if not child.alive():
                    print(f"{child.name} stopped (status {child.proc.returncode}; log: "
                          f"{child.log_path})", file=sys.stderr, flush=True)
                    return 1
        print("\nstopping the web page and the model server", flush=True)
        return 0

    def run(self):
        os.makedirs(self.out, exist_ok=True)
        try:
            for i, (name, step) in enumerate(self.steps, 1):
                print(f"\n=== [{i}/{len(self.steps)}] {name} ===", flush=True)
                start = time.time()
                try:
                    step()
                except StepFailed as e:
                    print(f"\ndemo failed at step '{name}': {e}", file=sys.stderr, flush=True)
                    return 1
                self.timings.append((name, time.time() - start))
            if not self.args.keep_page:
                self.stop_all()
            self.print_summary()
            return self.wait_for_interrupt() if self.args.keep_page else 0
        finally:
            self.stop_all()

    def print_summary(self):
        print("\n=== done ===")
        for name, seconds in self.timings:
            print(f"  {name:<12} {seconds:7.1f} s")
        print(f"test split report: {os.path.join(self.report, 'report.html')}")
        if self.args.keep_page:
            print(f"web page: {self.page_url} (model server REST {self.server.rest_address}, "
                  f"gRPC {self.server.grpc_address}); Ctrl-C stops them", flush=True)
        else:
            print(f"web page: {self.page_url} (stopped with the demo; to keep it and the model "
                  f"server running: make demo KEEP_PAGE=1, or scripts/demo.py --keep_page)",
                  flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("DATA") or None,
                        help="folder of UTKFace images (default: ../shared/data/utkface/UTKFace)")
    parser.add_argument("--output_dir", "--out", dest="out", default=os.path.join(ROOT, "build", "demo"))
    parser.add_argument("--config", default=os.path.join(ROOT, "configs", "demo.flags"),
                        help="trainer flagfile")
    parser.add_argument("--limit", type=int, default=0,
                        help="use only this many images (a spread-out slice; 0: all)")
    parser.add_argument("--queries", type=int, default=5, help="images sent to the server")
    parser.add_argument("--keep_page", action="store_true",
                        help="keep the web page and the model server running after the demo, "
                             "until Ctrl-C (default: stop them and exit)")
    parser.add_argument("--page_port", type=int, default=0,
                        help="the web page's port (default 0: a free one, printed)")
    console.add_verbose_flag(parser, also=" of every step")
    argv = sys.argv[1:]
    arg_types.warn_renamed(argv, {"--out": "--output_dir"})
    args = parser.parse_args(argv)
    if not args.data and os.path.isdir(SHARED_UTK):
        args.data = SHARED_UTK
    if not args.data or not os.path.isdir(args.data):
        print("make demo needs a folder of UTKFace images: make demo DATA=<dir>\n"
              "(UTKFace 'Aligned & Cropped Faces', non-commercial research use only: "
              "https://susanqq.github.io/UTKFace/)", file=sys.stderr)
        return 2
    return Demo(args).run()


if __name__ == "__main__":
    sys.exit(main())
