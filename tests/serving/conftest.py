"""Fixtures: a tiny exported model and a running local server on 127.0.0.1 (ephemeral ports)."""
import os

import numpy as np
import pytest

from export import export_model, testing

UTK_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "utkface",
                       "UTKFace")
MAX_REQUEST_BYTES = 1 << 20


@pytest.fixture(scope="session")
def job_dir(tmp_path_factory):
    return testing.make_job_dir(tmp_path_factory.mktemp("job"), type="classification",
                                predict_gender=True)


@pytest.fixture(scope="session")
def model_base(job_dir, tmp_path_factory):
    """A model base path holding version 1."""
    base = str(tmp_path_factory.mktemp("models") / "age")
    export_model.export_saved_model(job_dir, base)
    return base


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
