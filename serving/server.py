"""Local model server speaking TF Serving's gRPC and REST APIs (CLI and embeddable class).

For development, tests and machines without Docker; production runs the real
`tensorflow/serving` image on the same model directory (see serving/README.md).

  python -m serving.server --model_base_path=models/age --model_name=age \
      --port=8500 --rest_api_port=8501

Flags follow tensorflow_model_server's names where they exist. Binds 127.0.0.1 unless
`--host` says otherwise. `--rest_api_port=0` turns REST off (as in TF Serving); in the
`ModelServer` class, port 0 means "pick a free port" (tests).
"""
if __name__ == "__main__":  # before TensorFlow's start-up lines (agegender.console)
    from agegender import console
    console.quiet()

import argparse
import inspect
import logging
import os
import signal
import sys
import threading

from agegender import arg_types, console, image_header, tf_threads
from agegender import serving_contract as contract
from serving import core as core_lib
from serving import rest_api
from serving.batching import BatchingQueue
from serving.core import ServingCore
from serving.grpc_api import GrpcServer
from serving.model_store import ModelStore
from serving.rest_api import DEFAULT_MAX_CONNECTIONS, RestServer

log = logging.getLogger("serving.server")

DEFAULT_NUM_BATCH_THREADS = os.cpu_count() or 1  # TF Serving's advice for CPU: one per core


class ModelServer:
    """Model store + (optional) batching queue + gRPC and REST endpoints."""

    def __init__(self, model_base_path, model_name=contract.DEFAULT_MODEL_NAME, host="127.0.0.1",
                 grpc_port=0, rest_port=0, enable_batching=True, max_batch_size=16,
                 batch_timeout_micros=2000, max_enqueued_batches=1000,
                 num_batch_threads=DEFAULT_NUM_BATCH_THREADS,
                 batch_wait_when_idle=False,
                 file_system_poll_wait_seconds=1.0,
                 max_request_bytes=contract.DEFAULT_MAX_REQUEST_BYTES,
                 request_timeout=30.0, enable_rest=True, enable_grpc=True, warmup=True,
                 rest_api_max_connections=DEFAULT_MAX_CONNECTIONS, rest_api_num_threads=None,
                 rest_api_header_timeout=rest_api.DEFAULT_HEADER_TIMEOUT,
                 rest_api_idle_timeout=rest_api.DEFAULT_IDLE_TIMEOUT,
                 rest_api_min_body_rate=rest_api.DEFAULT_MIN_BODY_RATE,
                 max_image_pixels=image_header.DEFAULT_MAX_PIXELS,
                 max_inflight_request_bytes=core_lib.DEFAULT_MAX_INFLIGHT_REQUEST_BYTES,
                 max_request_pixels=core_lib.DEFAULT_MAX_REQUEST_PIXELS,
                 max_inflight_pixels=core_lib.DEFAULT_MAX_INFLIGHT_PIXELS):
        self.store = ModelStore(model_name, model_base_path, file_system_poll_wait_seconds,
                                warmup=warmup)
        self.batcher = (BatchingQueue(max_batch_size, batch_timeout_micros / 1e6,
                                      max_enqueued_batches, num_batch_threads,
                                      wait_when_idle=batch_wait_when_idle,
                                      stuck_after=request_timeout)
                        if enable_batching else None)
        self.core = ServingCore(self.store, self.batcher, request_timeout,
                                max_batch_size=max_batch_size, max_image_pixels=max_image_pixels,
                                max_inflight_request_bytes=max_inflight_request_bytes,
                                max_request_pixels=max_request_pixels,
                                max_inflight_pixels=max_inflight_pixels)
        self._config = dict(host=host, max_request_bytes=max_request_bytes)
        self._grpc_port, self._rest_port = grpc_port, rest_port
        self._enable_grpc, self._enable_rest = enable_grpc, enable_rest
        self._rest_options = dict(
            max_connections=rest_api_max_connections, num_threads=rest_api_num_threads,
            header_timeout=rest_api_header_timeout, idle_timeout=rest_api_idle_timeout,
            min_body_rate=rest_api_min_body_rate)
        self.grpc = self.rest = None

    def start(self):
        self.store.start()
        if self._enable_grpc:
            self.grpc = GrpcServer(self.core, port=self._grpc_port, **self._config).start()
        if self._enable_rest:
            self.rest = RestServer(self.core, port=self._rest_port, **self._rest_options,
                                   **self._config).start()
        return self

    @property
    def grpc_port(self):
        return self.grpc.port if self.grpc else None

    @property
    def rest_port(self):
        return self.rest.port if self.rest else None

    def stop(self):
        if self.rest:
            self.rest.stop()
        if self.grpc:
            self.grpc.stop()
        if self.batcher:
            self.batcher.stop()
        self.store.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


_bool = arg_types.boolean
_at_least = arg_types.at_least
_positive_seconds = arg_types.positive(float, "a number of seconds")


# The server's flags, TF Serving's names where it has them: (flag, type, default, help).
FLAGS = (
    ("--model_name", str, contract.DEFAULT_MODEL_NAME, "the model's name in requests"),
    ("--host", str, "127.0.0.1", "address to bind (default loopback only)"),
    ("--port", int, contract.DEFAULT_GRPC_PORT, "gRPC port"),
    ("--rest_api_port", int, contract.DEFAULT_REST_PORT, "REST port (0: no REST)"),
    ("--enable_batching", _bool, True, "merge concurrent requests into batches"),
    ("--max_batch_size", _at_least(1, "a batch size"), 16,
     "rows per batch, and per request (more: INVALID_ARGUMENT, as TF Serving)"),
    ("--batch_timeout_micros", _at_least(0, "a timeout"), 2000,
     "how long a batch waits to fill"),
    ("--num_batch_threads", _at_least(1, "a thread count"), DEFAULT_NUM_BATCH_THREADS,
     "batches run concurrently (TF Serving's num_batch_threads; default: one per core, "
     "%(default)s)"),
    ("--batch_wait_when_idle", _bool, False,
     "wait batch_timeout_micros for a fuller batch even when no batch is running (TF "
     "Serving's behaviour; default: an idle model runs what is queued at once)"),
    ("--max_enqueued_batches", int, 1000,
     "queued requests beyond this get UNAVAILABLE (TF Serving counts queued batches)"),
    ("--file_system_poll_wait_seconds", float, 1.0,
     "how often to look for new versions (0: never)"),
    ("--max_request_bytes", int, contract.DEFAULT_MAX_REQUEST_BYTES,
     "largest accepted request (REST body / gRPC message); a gRPC tensor may not declare "
     "more elements than this either"),
    ("--max_inflight_request_bytes", _at_least(1, "a byte count"),
     core_lib.DEFAULT_MAX_INFLIGHT_REQUEST_BYTES,
     "bytes of requests (REST bodies, gRPC messages) decoded and run at once, all clients "
     "together; more wait (default %(default)s)"),
    ("--max_image_pixels", _at_least(1, "a pixel count"), image_header.DEFAULT_MAX_PIXELS,
     arg_types.MAX_IMAGE_PIXELS_HELP + " (default %(default)s)"),
    ("--max_request_pixels", _at_least(1, "a pixel count"), core_lib.DEFAULT_MAX_REQUEST_PIXELS,
     "image pixels one request may declare, all its images together (read from their "
     "headers); more: 413 / RESOURCE_EXHAUSTED (default %(default)s; at most 3/4 of "
     "--max_inflight_pixels)"),
    ("--max_inflight_pixels", _at_least(1, "a pixel count"),
     core_lib.DEFAULT_MAX_INFLIGHT_PIXELS,
     "image pixels decoded at once, all clients together; a request that does not fit now "
     "gets 429 / RESOURCE_EXHAUSTED at once (default %(default)s; a quarter is kept for "
     "requests of at most 1/16 of it)"),
    ("--rest_api_max_connections", _at_least(1, "a connection count"), DEFAULT_MAX_CONNECTIONS,
     "open REST connections at most; a new one beyond it closes the longest-idle one, or "
     "gets 503 when all have a request in progress"),
    ("--rest_api_num_threads", _at_least(1, "a thread count"), rest_api.default_num_threads(),
     "REST requests received and answered at once (TF Serving's flag; default 4 per core but "
     "at least 32: %(default)s); idle connections take no thread"),
    ("--rest_api_header_timeout", _positive_seconds, rest_api.DEFAULT_HEADER_TIMEOUT,
     "seconds for a request's whole headers to arrive (default %(default)s), else 408"),
    ("--rest_api_min_body_rate", _at_least(1, "a rate in bytes/s"),
     rest_api.DEFAULT_MIN_BODY_RATE,
     "bytes/s a body must arrive at after the header timeout's grace (default %(default)s), "
     "else 408"),
    ("--rest_api_idle_timeout", _positive_seconds, rest_api.DEFAULT_IDLE_TIMEOUT,
     "seconds an idle keep-alive connection stays open (default %(default)s)"),
    ("--request_timeout", float, 30.0, "seconds per request"),
    ("--enable_model_warmup", _bool, True, "replay assets.extra/tf_serving_warmup_requests"),
    (tf_threads.INTRA_OP_FLAG, tf_threads.thread_count, tf_threads.INTRA_OP,
     tf_threads.INTRA_OP_HELP),
    (tf_threads.INTER_OP_FLAG, tf_threads.thread_count, tf_threads.INTER_OP,
     tf_threads.INTER_OP_HELP),
)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model_base_path", required=True, help="directory of numeric versions")
    for flag, kind, default, text in FLAGS:
        p.add_argument(flag, type=kind, default=default, help=text)
    console.add_verbose_flag(p, also=", and log at DEBUG level")
    args = p.parse_args(argv)
    if args.max_request_pixels > args.max_inflight_pixels * 3 // 4:
        p.error(f"--max_request_pixels ({args.max_request_pixels}) must be at most 3/4 of "
                f"--max_inflight_pixels ({args.max_inflight_pixels}), expected a smaller "
                "number: a larger request could never be admitted")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tf_threads.set_from_args(args)
    # A flag named as a ModelServer parameter is that parameter; the four TF Serving
    # spellings that differ from the parameters' names are mapped here.
    same_name = {name: value for name, value in vars(args).items()
                 if name in inspect.signature(ModelServer).parameters}
    server = ModelServer(grpc_port=args.port, rest_port=args.rest_api_port,
                         enable_rest=args.rest_api_port != 0, warmup=args.enable_model_warmup,
                         **same_name)
    server.start()
    current = server.store._current
    print(f"serving model {args.model_name!r} version "
          f"{current.version if current else '(none yet)'}: gRPC {args.host}:{server.grpc_port}"
          + (f", REST {args.host}:{server.rest_port}" if server.rest else ""), flush=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    server.stop()
    if server.batcher:
        log.info("batching: %s", server.batcher.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
