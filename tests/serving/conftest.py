"""Fixtures: a tiny exported model and a running local server on 127.0.0.1 (ephemeral ports)."""
import os

import numpy as np
import pytest

from export import export_model
from serving.server_process import ServerProcess

UTK_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "utkface",
                       "UTKFace")
MAX_REQUEST_BYTES = 1 << 20


@pytest.fixture(scope="session")
def job_dir(tiny_job):
    return tiny_job("clf_gender")


@pytest.fixture(scope="session")
def model_base(tiny_export):
    """A model base path holding version 1."""
    return tiny_export("clf_gender")


@pytest.fixture(scope="session")
def images():
    """Encoded face images: real UTKFace JPEGs (with parseable names) when ../shared is there."""
    if os.path.isdir(UTK_DIR):
        names = sorted(os.listdir(UTK_DIR))[:4]
        return [open(os.path.join(UTK_DIR, n), "rb").read() for n in names]
    return [export_model.synthetic_jpeg(seed=i) for i in range(4)]


@pytest.fixture(scope="session")
def reference(model_base):
    """The version-1 model loaded directly (no server), to compare served outputs with."""
    from serving.model_store import LoadedModel

    model = LoadedModel("age", 1, os.path.join(model_base, "1"))

    def predict(images, signature="serving_default", **extra):
        inputs = {"image_bytes": np.array(images, dtype=object)} if images is not None else {}
        inputs.update(extra)
        return model.run(signature, inputs)
    return predict


@pytest.fixture(scope="session")
def server(model_base):
    """One server for the API tests; batching on with a visible timeout so merges happen."""
    from serving.server import ModelServer

    srv = ModelServer(model_base, "age", grpc_port=0, rest_port=0, max_batch_size=8,
                      batch_timeout_micros=20000, batch_wait_when_idle=True,
                      max_request_bytes=MAX_REQUEST_BYTES,
                      file_system_poll_wait_seconds=0).start()
    yield srv
    srv.stop()


@pytest.fixture
def rest(server):
    from serving.client import RestClient

    client = RestClient(f"127.0.0.1:{server.rest_port}", timeout=20)
    yield client
    client.close()


@pytest.fixture
def grpc_client(server):
    from serving.client import GrpcClient

    client = GrpcClient(f"127.0.0.1:{server.grpc_port}", timeout=20)
    yield client
    client.close()


# -- a server in a child process with a memory limit, for hostile requests ----------------

# RLIMIT_DATA (private writable memory: heap, malloc arenas in use, thread stacks) of the
# child server. A healthy server with the tiny model uses ~0.6 GB of it (VmData) after its
# warmup and concurrent REST/gRPC predictions; 1.5 GB leaves room for that and fails on any
# request that makes the server allocate a gigabyte (a 20000x20000 decode is 1.2 GB). Not
# RLIMIT_AS: TensorFlow maps ~2.7 GB of address space at import, most of it never used.
CHILD_MEMORY_LIMIT = 1536 << 20


class ChildServer(ServerProcess):
    """`python -m serving.server` in a child process with CHILD_MEMORY_LIMIT, started."""

    def __init__(self, model_base, log_path, flags=()):
        super().__init__(model_base, flags=flags, log_path=log_path,
                         data_limit=CHILD_MEMORY_LIMIT)
        self.start(timeout=300)

    def log(self):
        return self.output()


@pytest.fixture(scope="session")
def unchecked_model_base(tiny_export):
    """Version 1 exported without the in-graph pixel limit (like a model exported before it
    existed), so only the server's own checks stand between a hostile request and the
    decoder."""
    return tiny_export("clf_gender", max_image_pixels=0)


@pytest.fixture(scope="session")
def limited_server(unchecked_model_base, tmp_path_factory):
    """A server (default flags: max_batch_size 16, max_request_bytes 16 MiB) in a child
    process that a request making it allocate a gigabyte would kill."""
    child = ChildServer(unchecked_model_base, str(tmp_path_factory.mktemp("child") / "log"))
    yield child
    child.stop()


@pytest.fixture(scope="session")
def tiny_png():
    """A 1x1 PNG (~70 bytes)."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (1, 1), (128, 64, 32)).save(out, "PNG")
    return out.getvalue()
