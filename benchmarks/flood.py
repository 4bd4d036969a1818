"""Flood probe: does a normal client still get correct answers, in time, while hostile
clients flood the server? (issue 23's target: median <= 2 s, bounded memory.)

  .venv/bin/python -m benchmarks.flood [--model=tiny|mobilenetv2|<model base path>] \
      [--duration=30] [--flood_clients=2] [--slowloris=64] [--targets=server]

Starts `python -m serving.server` (its default flags, plus `--server_flags`) in a child
process on 127.0.0.1, on `--model` (a base path of numeric versions, or `tiny` /
`mobilenetv2`: a model built and exported to a temporary directory). Then, for `--duration`
seconds, all at once:
- scan-bomb JPEGs: a 7000x7000 grey progressive JPEG whose last refinement scan is repeated
  5,000 times (567 KB that cost minutes to decode where scans are not counted), to
  `predict_photo`, over REST and gRPC (`--flood_clients` clients each);
- at-limit PNGs: 1-bit 7071x7071 PNGs (6 KB declaring 50 MP) to `predict_photo`, one per
  request and 16 per request, over REST and gRPC;
- `--slowloris` connections sending a request line, then one header line every 10 s
  (reopened when the server closes them);
and a normal client sends one face crop to `serving_default` every `--interval` seconds over
REST and over gRPC (timeout 10 s). Prints, per target and protocol, the normal client's
latency median / p90 / max and how many answers were correct (the same age and gender as on
the idle server), what the flood got back, and the server's peak RSS (VmHWM).

Targets: a function per target (`TARGETS`), each a context manager giving the addresses
the clients attack and the processes whose memory is read; a second target (a web page in
front of the server) adds its own function. Everything is bounded in count and time and stays
on loopback; the child processes are stopped by their pid at the end. Not a test.
"""
if __name__ == "__main__":  # before TensorFlow's start-up lines (agegender.console)
    from agegender import console
    console.quiet()

import argparse
import base64
import contextlib
import dataclasses
import http.client
import io
import json
import os
import socket
import sys
import tempfile
import threading
import time

import numpy as np

from agegender import console
from serving.server_process import ServerProcess

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
FACES = os.path.join(ROOT, "..", "shared", "data", "utkface", "UTKFace")
SLOW_LINE_SECONDS = 10.0
MAX_REQUESTS_PER_CLIENT = 100_000


# -- payloads ---------------------------------------------------------------------------

def scan_bomb_jpeg(side=7000, repeats=5000):
    """A grey progressive JPEG whose last scan is repeated `repeats` times before EOI."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("L", (side, side), 128).save(out, "JPEG", progressive=True, quality=75)
    data = out.getvalue()
    last_scan = data.rindex(b"\xff\xda")
    scan = data[last_scan:-2]  # SOS .. before EOI
    return data[:-2] + scan * repeats + b"\xff\xd9"


def at_limit_png(side=7071):
    from PIL import Image

    out = io.BytesIO()
    Image.new("1", (side, side)).save(out, "PNG", optimize=True)
    return out.getvalue()


def face_crop():
    names = sorted(os.listdir(FACES))[:1] if os.path.isdir(FACES) else []
    if names:
        with open(os.path.join(FACES, names[0]), "rb") as f:
            return f.read()
    from export.warmup import synthetic_jpeg

    return synthetic_jpeg(200)


def built_model(kind, directory):
    """`tiny`: a few-kilobyte model of the trainer contract; `mobilenetv2`: the recipe's
    architecture (MobileNetV2 1.0, 128 px, ImageNet backbone, untrained heads: the cost of
    the real model, not its answers), as benchmarks.serving builds it. Exported with
    predict_photo; returns the model base path."""
    from export import export_model
    from testing import tiny_models

    job = os.path.join(directory, "job")
    if kind == "tiny":
        tiny_models.make_job_dir(job, type="classification", predict_gender=True)
    else:
        from benchmarks import serving as serving_benchmark

        serving_benchmark.build_job_dir(job, 128, 1.0, serving_benchmark.DEFAULT_WEIGHTS)
    base = os.path.join(directory, "models", "age")
    export_model.export_saved_model(job, base)
    return base


# -- clients ----------------------------------------------------------------------------

def rest_predict(address, images, signature="serving_default", timeout=10.0):
    """(HTTP status, parsed JSON body); a connection per request, as a fresh client."""
    host, port = address.rsplit(":", 1)
    body = json.dumps({"signature_name": signature, "instances": [
        {"image_bytes": {"b64": base64.b64encode(i).decode()}} for i in images]})
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("POST", "/v1/models/age:predict", body,
                     {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


class GrpcPredict:
    def __init__(self, address):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self.channel = grpc.insecure_channel(address, options=[
            ("grpc.max_send_message_length", 64 << 20)])
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

    def __call__(self, images, signature="serving_default", timeout=10.0):
        """("OK", {output: ndarray}) or (status code name, details)."""
        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name = "age"
        request.model_spec.signature_name = signature
        request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(images, dtype=tf.string))
        try:
            response = self.stub.Predict(request, timeout=timeout)
        except grpc.RpcError as e:
            return e.code().name, e.details()
        return "OK", {k: tf.make_ndarray(v) for k, v in response.outputs.items()}

    def close(self):
        self.channel.close()


def _answer(protocol, outcome):
    """(age, gender) from a serving_default answer, or None."""
    status, body = outcome
    if protocol == "rest":
        if status != 200:
            return None
        row = body["predictions"][0]
        return round(float(row["age"]), 3), row.get("gender")
    if status != "OK":
        return None
    gender = body.get("gender")
    return (round(float(body["age"][0]), 3),
            gender[0].decode() if gender is not None else None)


# -- targets ----------------------------------------------------------------------------

@dataclasses.dataclass
class Target:
    name: str
    rest: str  # host:port of TF Serving's REST API (or what speaks it)
    grpc: str | None  # host:port of its gRPC API, if any
    processes: dict  # name -> ChildProcess whose memory is reported


@contextlib.contextmanager
def server_target(model_base, flags, log_dir):
    server = ServerProcess(model_base, flags=flags,
                           log_path=os.path.join(log_dir, "server.log")).start(timeout=600)
    try:
        yield Target("server", server.rest_address, server.grpc_address, {"server": server})
    finally:
        server.stop()


TARGETS = {"server": server_target}


# -- the flood --------------------------------------------------------------------------

def _flood(stop, record, send):
    for _ in range(MAX_REQUESTS_PER_CLIENT):
        if stop.is_set():
            return
        try:
            record(send())
        except Exception as e:  # a timeout or reset is an outcome too
            record(type(e).__name__)


def _slowloris(stop, address, counts):
    """One connection trickling header lines; reopened when the server closes it."""
    host, port = address.rsplit(":", 1)
    while not stop.is_set():
        try:
            s = socket.create_connection((host, int(port)), timeout=5)
        except OSError:
            counts["refused"] += 1
            stop.wait(1)
            continue
        counts["opened"] += 1
        try:
            s.sendall(b"POST /v1/models/age:predict HTTP/1.1\r\nHost: x\r\n")
            s.settimeout(SLOW_LINE_SECONDS)
            while not stop.is_set():
                try:
                    if s.recv(65536) == b"":
                        break
                    break  # an answer (408): the server is closing it
                except socket.timeout:
                    s.sendall(b"X-Slow: 1\r\n")
        except OSError:
            pass
        finally:
            counts["closed by server"] += not stop.is_set()
            s.close()


def run_target(target, args, payloads):
    stop = threading.Event()
    lock = threading.Lock()
    flood_outcomes = {}
    slow_counts = {"opened": 0, "closed by server": 0, "refused": 0}

    def recorder(kind):
        def record(outcome):
            status = outcome[0] if isinstance(outcome, tuple) else outcome
            with lock:
                counts = flood_outcomes.setdefault(kind, {})
                counts[status] = counts.get(status, 0) + 1
        return record

    grpc_clients = []
    threads = []
    floods = {"scan-bomb JPEG": [payloads["bomb"]], "at-limit PNG": [payloads["png"]],
              "16 at-limit PNGs": [payloads["png"]] * 16}
    for kind, images in floods.items():
        for _ in range(args.flood_clients):
            threads.append(threading.Thread(target=_flood, args=(
                stop, recorder(f"{kind} REST"),
                lambda images=images: rest_predict(target.rest, images, "predict_photo",
                                                   timeout=30))))
            if target.grpc:
                client = GrpcPredict(target.grpc)
                grpc_clients.append(client)
                threads.append(threading.Thread(target=_flood, args=(
                    stop, recorder(f"{kind} gRPC"),
                    lambda images=images, client=client: client(images, "predict_photo",
                                                                timeout=30))))
    threads += [threading.Thread(target=_slowloris, args=(stop, target.rest, slow_counts))
                for _ in range(args.slowloris)]

    face = payloads["face"]
    normal = {"REST": lambda: rest_predict(target.rest, [face])}
    if target.grpc:
        grpc_normal = GrpcPredict(target.grpc)
        grpc_clients.append(grpc_normal)
        normal["gRPC"] = lambda: grpc_normal([face])
    expected = {p: _answer("rest" if p == "REST" else "grpc", call())
                for p, call in normal.items()}  # on the idle server
    results = {p: [] for p in normal}
    peak_rss = {name: 0 for name in target.processes}

    for thread in threads:
        thread.daemon = True
        thread.start()
    end = time.monotonic() + args.duration
    while time.monotonic() < end:
        for protocol, call in normal.items():
            started = time.monotonic()
            try:
                answer = _answer("rest" if protocol == "REST" else "grpc", call())
            except Exception:  # timed out, reset: wrong
                answer = None
            results[protocol].append((time.monotonic() - started,
                                      answer is not None and answer == expected[protocol]))
        for name, process in target.processes.items():
            peak_rss[name] = max(peak_rss[name], process.memory()["VmRSS"])
        time.sleep(args.interval)
    stop.set()
    for thread in threads:
        thread.join(35)
    for client in grpc_clients:
        client.close()
    hwm = {name: p.memory()["VmHWM"] for name, p in target.processes.items()}
    alive = {name: p.alive() for name, p in target.processes.items()}
    return results, flood_outcomes, slow_counts, peak_rss, hwm, alive


def report(target, results, flood_outcomes, slow_counts, peak_rss, hwm, alive):
    print(f"\n== target: {target.name} ==")
    print(f"{'normal client':<14} {'requests':>8} {'correct':>8} {'p50 s':>7} {'p90 s':>7} "
          f"{'max s':>7}")
    for protocol, rows in results.items():
        latencies = np.array([r[0] for r in rows])
        correct = sum(r[1] for r in rows)
        print(f"{protocol:<14} {len(rows):>8} {correct:>8} {np.median(latencies):>7.3f} "
              f"{np.percentile(latencies, 90):>7.3f} {latencies.max():>7.3f}")
    print("flood outcomes:")
    for kind, counts in sorted(flood_outcomes.items()):
        print(f"  {kind:<24} " + ", ".join(f"{k}: {v}" for k, v in sorted(
            counts.items(), key=lambda kv: -kv[1])))
    print("slowloris connections: " + ", ".join(f"{k} {v}" for k, v in slow_counts.items()))
    for name in peak_rss:
        print(f"{name}: peak RSS sampled {peak_rss[name] / 1024:.0f} MB, VmHWM "
              f"{hwm[name] / 1024:.0f} MB, alive at the end: {alive[name]}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny",
                   help="model base path (numeric versions), or 'tiny' / 'mobilenetv2': one "
                        "built and exported to a temporary directory (default %(default)s)")
    p.add_argument("--targets", default="server", help=f"comma list of {sorted(TARGETS)}")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of flood per target")
    p.add_argument("--interval", type=float, default=0.25,
                   help="seconds between the normal client's requests")
    p.add_argument("--flood_clients", type=int, default=2,
                   help="clients per flood kind and protocol")
    p.add_argument("--slowloris", type=int, default=64, help="slow connections")
    p.add_argument("--server_flags", default="", help="extra serving.server flags")
    console.add_verbose_flag(p)
    args = p.parse_args(argv)
    if not 0 < args.duration <= 600 or args.slowloris > 512 or args.flood_clients > 16:
        p.error("bounded probe: --duration in (0, 600], --slowloris <= 512, "
                "--flood_clients <= 16")
    unknown = set(args.targets.split(",")) - set(TARGETS)
    if unknown:
        p.error(f"unknown --targets {sorted(unknown)}, expected some of {sorted(TARGETS)}")
    with tempfile.TemporaryDirectory(prefix="flood-") as tmp:
        model = (built_model(args.model, tmp) if args.model in ("tiny", "mobilenetv2")
                 else args.model)
        payloads = {"bomb": scan_bomb_jpeg(), "png": at_limit_png(), "face": face_crop()}
        print(f"model: {args.model}; payloads: "
              f"scan bomb {len(payloads['bomb']):,} B, PNG {len(payloads['png']):,} B, face "
              f"{len(payloads['face']):,} B; {args.duration:g} s, {args.flood_clients} clients "
              f"per flood kind and protocol, {args.slowloris} slowloris connections",
              flush=True)
        for name in args.targets.split(","):
            with TARGETS[name](model, args.server_flags.split(), tmp) as target:
                report(target, *run_target(target, args, payloads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
