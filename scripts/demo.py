"""`make demo`: the whole product end to end on a folder of UTKFace images.

records -> train (short CPU configuration) -> export -> local server -> REST and gRPC
queries printing "predicted age / true age" -> evaluation report -> stop the server.

Every step is a real command a user could run by hand (printed before it runs); the
first failure stops the demo and names the failing step. The server is always stopped.
"""
import argparse
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run as a script: the project's packages come from the checkout

from agegender import serving_contract  # noqa: E402
from serving.server_process import ServerProcess, ServerProcessError  # noqa: E402

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
        self.steps = [
            ("records", self.build_records),
            ("train", self.train),
            ("export", self.export),
            ("serve", self.start_server),
            ("query REST", lambda: self.query("rest")),
            ("query gRPC", lambda: self.query("grpc")),
            ("evaluate", self.evaluate),
            ("stop server", self.stop_server),
        ]
        self.timings = []

    def run_cmd(self, cmd):
        print("$ " + " ".join(cmd), flush=True)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
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
        self.run_cmd([sys.executable, "-m", "export.export_model", f"--job_dir={self.job_dir}",
                      f"--export_base={self.models}"])

    def start_server(self):
        print("$ " + " ".join(self.server.command) + " &", flush=True)
        try:
            self.server.start(timeout=180)
        except ServerProcessError as e:
            raise StepFailed(str(e)) from None
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
        self.run_cmd([sys.executable, "-m", "evaluation.evaluate", f"--model={self.models}",
                      f"--records_dir={self.records}", "--split=test",
                      f"--output_dir={self.report}"])

    def stop_server(self):
        self.server.stop()

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
        finally:
            self.stop_server()
        print("\n=== done ===")
        for name, seconds in self.timings:
            print(f"  {name:<12} {seconds:7.1f} s")
        print(f"report: {os.path.join(self.report, 'report.html')}")
        return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("DATA") or None,
                        help="folder of UTKFace images (default: ../shared/data/utkface/UTKFace)")
    parser.add_argument("--out", default=os.path.join(ROOT, "build", "demo"))
    parser.add_argument("--config", default=os.path.join(ROOT, "configs", "demo.flags"),
                        help="trainer flagfile")
    parser.add_argument("--limit", type=int, default=0,
                        help="use only this many images (a spread-out slice; 0: all)")
    parser.add_argument("--queries", type=int, default=5, help="images sent to the server")
    args = parser.parse_args()
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
