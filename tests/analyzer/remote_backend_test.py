"""TF Serving backends: the local server (`serving.server`, in process) asked over gRPC and
REST answers like the SavedModel in process; failures are typed; the REST path and
`import serving.client` load no TensorFlow."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from agegender import FaceAnalyzer, ImageError, ServerError
from export import export_model

pytestmark = pytest.mark.slow  # starts a server with a model (~20 s on 2 cores)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def server(model_base):
    from serving.server import ModelServer

    srv = ModelServer(model_base, "age", grpc_port=0, rest_port=0,
                      file_system_poll_wait_seconds=0).start()
    yield srv
    srv.stop()


@pytest.fixture(params=["grpc", "rest"])
def remote(request, server):
    port = server.grpc_port if request.param == "grpc" else server.rest_port
    scheme = "grpc" if request.param == "grpc" else "http"
    analyzer = FaceAnalyzer.load(f"{scheme}://127.0.0.1:{port}", timeout=60)
    yield analyzer
    analyzer.close()


def test_a_server_answers_like_the_model_in_process(remote, analyzer, photo, png_bomb):
    info = remote.info
    assert info.version == 1 and info.model_name == "age"
    assert "predict_photo" in info.signatures and "serving_default" in info.signatures
    got, want = remote.analyze(photo), analyzer.analyze(photo)
    assert len(got) == len(want) >= 2
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.box, b.box, atol=1e-3)
        assert a.age == pytest.approx(b.age, abs=1e-4) and a.gender == b.gender
        assert a.gender_probability == pytest.approx(b.gender_probability, abs=1e-6)
        np.testing.assert_allclose(a.age_distribution, b.age_distribution, atol=1e-6)
    crops = [export_model.synthetic_jpeg(seed=i) for i in range(2)]
    np.testing.assert_allclose([f.age for f in remote.estimate_crops(crops)],
                               [f.age for f in analyzer.estimate_crops(crops)], atol=1e-4)
    answers = remote.analyze_batch([photo, png_bomb, photo[:len(photo) // 3]],
                                   on_error="return")
    assert len(answers[0]) == len(got)
    assert answers[1].reason == "image_too_large"  # refused unsent
    assert isinstance(answers[2], ImageError)  # refused by the server, alone


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_a_server_that_is_down_is_a_server_error(scheme, photo):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    analyzer = FaceAnalyzer.load(f"{scheme}://127.0.0.1:{port}", timeout=2)
    with pytest.raises(ServerError) as failed:
        analyzer.analyze(photo)
    assert failed.value.code == "UNAVAILABLE"


def test_an_unknown_model_name_is_a_server_error(server, photo):
    analyzer = FaceAnalyzer.from_server(f"127.0.0.1:{server.rest_port}", protocol="rest",
                                        model_name="nope")
    with pytest.raises(ServerError) as failed:
        analyzer.analyze(photo)
    assert failed.value.code == 404


def test_rest_and_the_client_load_no_tensorflow(server, photo, tmp_path):
    """The three lines of the docs, on a REST server, in a fresh interpreter."""
    path = tmp_path / "photo.png"
    path.write_bytes(photo)
    code = (
        "import json, sys\n"
        "from agegender import FaceAnalyzer, Face\n"
        "loaded = ['tensorflow' in sys.modules]\n"
        f"a = FaceAnalyzer.load('http://127.0.0.1:{server.rest_port}')\n"
        f"faces = a.analyze({str(path)!r})\n"
        "import serving.client\n"
        "loaded.append('tensorflow' in sys.modules)\n"
        "print(json.dumps({'faces': [f.to_dict() for f in faces], 'tf': loaded}))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["tf"] == [False, False]
    assert len(answer["faces"]) >= 2 and all(f["gender"] in ("male", "female")
                                             for f in answer["faces"])
