"""Serving benchmark: latency and throughput of REST and gRPC, with and without batching,
side by side with a direct in-process call of the SavedModel.

  .venv/bin/python -m benchmarks.serving [--duration=60] [--clients=1,16]

Builds MobileNetV2 (alpha 1.0, 128 px; ImageNet weights from ../shared/weights when present,
else random) with the trainer contract's heads (age distribution + gender), exports it with
`export.export_model`, starts two `python -m serving.server` processes on 127.0.0.1 (one
with batching, one without), and sends one real 200x200 UTKFace JPEG per request from N
client threads for `--duration` seconds per phase. Prints per phase: requests, errors, p50
and p99 latency, throughput; then the batching/no-batching throughput ratios.

All traffic stays on 127.0.0.1, every phase is bounded in time, and the servers are
stopped (by their pid) at the end. Not a test: numbers depend on what else runs.
"""
if __name__ == "__main__":  # before TensorFlow's start-up lines (agegender.console)
    from agegender import console
    console.quiet()

import argparse
import glob
import os
import shutil
import sys
import tempfile
import threading
import time

import numpy as np

from agegender import console, tf_threads
from agegender import serving_contract as contract
from serving.server_process import ServerProcess

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SHARED = os.path.join(ROOT, "..", "shared")
DEFAULT_WEIGHTS = os.path.join(
    SHARED, "weights", "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5")
DEFAULT_IMAGES = os.path.join(SHARED, "data", "utkface", "UTKFace")
ALL_MODES = ("direct", "grpc", "rest", "grpc-nobatch", "rest-nobatch", "grpc-tfdefault",
             "rest-tfdefault")


def build_job_dir(job_dir, img_dim, alpha, weights):
    """MobileNetV2 + the contract's heads, saved as a trainer job dir (model.keras + spec)."""
    import keras
    from keras import layers

    from agegender import heads
    from agegender import job_dir as job_dir_lib
    from agegender import model_spec as ms

    spec = ms.ModelSpec(type="classification", predict_gender=True, img_dim=img_dim,
                        base_model="MobileNetV2", alpha=alpha)
    inputs = keras.Input((img_dim, img_dim, 3), dtype="float32")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)  # MobileNetV2's preprocess_input
    backbone = keras.applications.MobileNetV2(
        input_shape=(img_dim, img_dim, 3), alpha=alpha, include_top=False, pooling="avg",
        weights=weights if weights and os.path.exists(weights) else None)
    x = backbone(x)
    outputs = {head.output: head.output_layer()(x) for head in heads.for_spec(spec)}
    model = keras.Model(inputs, outputs)
    os.makedirs(job_dir, exist_ok=True)
    job_dir_lib.save(job_dir, model, spec)
    return job_dir


def cpu_seconds(pid=None):
    """user+system CPU seconds of a process (this one by default), from /proc."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_phase(make_call, clients, duration, warmup):
    """N threads call `make_call()()` in a loop; returns latencies (s), error count, the first
    error and the number of calls made (warmup included)."""
    latencies, errors, first_error, calls = [], [0], [], [0]
    lock = threading.Lock()
    start_barrier = threading.Barrier(clients)
    t_start = [0.0]

    def worker():
        call = make_call()
        mine, bad = [], 0
        start_barrier.wait()
        begin = time.monotonic()
        measure_from = begin + warmup
        stop_at = measure_from + duration
        i = 0
        while True:
            t0 = time.monotonic()
            if t0 >= stop_at:
                break
            try:
                call(i)
                ok = True
            except Exception as e:  # counted and reported
                ok = False
                if not first_error:
                    first_error.append(repr(e)[:200])
            t1 = time.monotonic()
            if t0 >= measure_from:
                if ok:
                    mine.append(t1 - t0)
                else:
                    bad += 1
            i += 1
        with lock:
            latencies.extend(mine)
            errors[0] += bad
            calls[0] += i
        t_start[0] = measure_from

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration + warmup + 120)
    return np.array(latencies), errors[0], (first_error[0] if first_error else ""), calls[0]


# Server kinds: the flags that make each one (on top of --model_base_path and the ports).
# "tfdefault" is what `tensorflow_model_server` does when given no tuning flags: no batching,
# TensorFlow picks its own thread pools.
TF_DEFAULT_FLAGS = ("--enable_batching=false", "--tensorflow_intra_op_parallelism=0",
                    "--tensorflow_inter_op_parallelism=0")


def _kind(mode):
    """'grpc' -> 'batch', 'rest-nobatch' -> 'nobatch', 'grpc-tfdefault' -> 'tfdefault'."""
    return mode.partition("-")[2] or "batch"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per phase")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per phase")
    p.add_argument("--clients", default="1,16", help="comma-separated client counts")
    p.add_argument("--modes", default=",".join(ALL_MODES),
                   help="direct: the SavedModel in this process; grpc/rest: the server with "
                        "its defaults (batching on); -nobatch: the same with "
                        "--enable_batching=false; -tfdefault: no batching and TensorFlow's "
                        "default threads (tensorflow_model_server without tuning flags)")
    p.add_argument("--img_dim", type=int, default=128)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--weights", default=DEFAULT_WEIGHTS, help="'' for random weights")
    p.add_argument("--images_dir", default=DEFAULT_IMAGES)
    p.add_argument("--num_images", type=int, default=64)
    tf_threads.add_flags(p)  # of the batch/nobatch servers and of the direct call
    p.add_argument("--server_flags", default="",
                   help="more flags for the batching server, space-separated, e.g. "
                        "'--batch_timeout_micros=5000 --num_batch_threads=1'")
    p.add_argument("--work_dir", default=None, help="keep the model here (default: temp dir)")
    console.add_verbose_flag(p)
    args = p.parse_args(argv)

    tf_threads.set_from_args(args)
    import tensorflow as tf

    from agegender import model_layout
    from export import export_model
    from serving.client import GrpcClient, RestClient

    thread_flags = (f"{tf_threads.INTRA_OP_FLAG}={args.tensorflow_intra_op_parallelism}",
                    f"{tf_threads.INTER_OP_FLAG}={args.tensorflow_inter_op_parallelism}")
    kind_flags = {"batch": (*thread_flags, *args.server_flags.split()),
                  "nobatch": ("--enable_batching=false", *thread_flags),
                  "tfdefault": TF_DEFAULT_FLAGS}
    paths = sorted(glob.glob(os.path.join(args.images_dir, "*")))[:args.num_images]
    if paths:
        images = [open(pth, "rb").read() for pth in paths]
        source = f"{len(images)} UTKFace JPEGs from {args.images_dir}"
    else:
        images = [export_model.synthetic_jpeg(size=200, seed=i) for i in range(16)]
        source = "16 synthetic 200x200 JPEGs (UTKFace not found)"
    work = args.work_dir or tempfile.mkdtemp(prefix="bench_serving_")
    servers = {}
    try:
        model_base = os.path.join(work, "models", "age")
        if not model_layout.versions(model_base):
            t0 = time.monotonic()
            job = build_job_dir(os.path.join(work, "job"), args.img_dim, args.alpha, args.weights)
            export_model.export_saved_model(job, model_base)
            print(f"built and exported MobileNetV2 in {time.monotonic() - t0:.0f}s", flush=True)
        weights = args.weights if args.weights and os.path.exists(args.weights) else "random"
        print(f"model: MobileNetV2 alpha={args.alpha} {args.img_dim}px, weights={weights}; "
              f"images: {source}; cpus: {os.cpu_count()}; load average "
              f"{os.getloadavg()[0]:.2f}", flush=True)

        modes = args.modes.split(",")
        unknown = set(modes) - set(ALL_MODES)
        if unknown:
            p.error(f"unknown modes {sorted(unknown)}; known: {', '.join(ALL_MODES)}")
        clients_list = [int(c) for c in args.clients.split(",")]
        direct_fn = None
        if "direct" in modes:
            loaded = tf.saved_model.load(os.path.join(model_base, "1"))
            direct_fn = loaded.signatures[contract.SERVING_DEFAULT]
        for kind in sorted({_kind(m) for m in modes if m != "direct"}):
            servers[kind] = ServerProcess(
                model_base, flags=("--file_system_poll_wait_seconds=0", *kind_flags[kind])
            ).start(timeout=300)
            print(f"server {kind}: serving.server defaults + {' '.join(kind_flags[kind])}",
                  flush=True)
        empty_key = tf.constant([], tf.string)

        def maker(mode):
            if mode == "direct":
                def make():
                    return lambda i: direct_fn(
                        image_bytes=tf.constant([images[i % len(images)]]), key=empty_key)
                return make
            protocol = mode.partition("-")[0]
            srv = servers[_kind(mode)]

            def make():
                if protocol == "grpc":
                    client = GrpcClient(f"127.0.0.1:{srv.grpc_port}", timeout=30)
                else:
                    client = RestClient(f"127.0.0.1:{srv.rest_port}", timeout=30)
                return lambda i: client.predict([images[i % len(images)]])
            return make

        results = {}
        header = (f"{'mode':<16}{'clients':>8}{'requests':>10}{'errors':>8}{'p50 ms':>9}"
                  f"{'p99 ms':>9}{'req/s':>9}{'server cpu ms/req':>19}{'client cpu ms/req':>19}")
        print(header, flush=True)
        for clients in clients_list:
            for mode in modes:
                pid = None if mode == "direct" else servers[_kind(mode)].proc.pid
                srv0, cli0 = (cpu_seconds(pid) if pid else 0.0), cpu_seconds()
                lat, errors, first, calls = run_phase(maker(mode), clients, args.duration,
                                                      args.warmup)
                srv_cpu = (cpu_seconds(pid) - srv0) / max(calls, 1) * 1e3 if pid else float("nan")
                cli_cpu = (cpu_seconds() - cli0) / max(calls, 1) * 1e3
                thr = len(lat) / args.duration
                p50 = np.percentile(lat, 50) * 1e3 if len(lat) else float("nan")
                p99 = np.percentile(lat, 99) * 1e3 if len(lat) else float("nan")
                results[(mode, clients)] = (thr, p50, p99, errors, srv_cpu)
                print(f"{mode:<16}{clients:>8}{len(lat):>10}{errors:>8}{p50:>9.1f}{p99:>9.1f}"
                      f"{thr:>9.1f}{srv_cpu:>19.1f}{cli_cpu:>19.1f}"
                      + (f"   first error: {first}" if errors else ""), flush=True)
        for protocol in ("grpc", "rest"):
            for clients in clients_list:
                a = results.get((protocol, clients))
                for baseline in ("nobatch", "tfdefault"):
                    b = results.get((f"{protocol}-{baseline}", clients))
                    if a and b and b[0] > 0:
                        print(f"{protocol} {clients} clients: batching / {baseline} throughput "
                              f"= {a[0] / b[0]:.2f}x, server CPU per request = "
                              f"{a[4] / b[4]:.2f}x", flush=True)
        if ("direct", 1) in results and ("grpc", 1) in results:
            print(f"grpc/direct p50 at 1 client = {results[('grpc', 1)][1]:.1f} / "
                  f"{results[('direct', 1)][1]:.1f} ms", flush=True)
        total_errors = sum(r[3] for r in results.values())
        print(f"total errors: {total_errors}", flush=True)
        return 1 if total_errors else 0
    finally:
        for kind, srv in servers.items():
            srv.stop()
            if getattr(srv, "_drain", None):
                srv._drain.join(5)
                for line in srv.output().splitlines()[-5:]:
                    if "batching:" in line:
                        print(f"server ({kind}): {line.split('batching:', 1)[1].strip()}")
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
