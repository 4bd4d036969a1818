"""Versions: the newest is served, a new one is picked up while serving, a broken one is not.

The versions are exported without predict_photo (whose detector tracing is most of an
export's cost): the store loads and switches versions whatever signatures they hold."""
import os
import time

import pytest

from export import export_model
from serving.client import GrpcClient, RestClient
from serving.server import ModelServer
from testing import tiny_models


def _wait_for(predicate, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_new_version_is_picked_up_without_restart(job_dir, tmp_path, images):
    base = str(tmp_path / "age")
    export_model.export_saved_model(job_dir, base, photo_signature=False)
    os.makedirs(os.path.join(base, "5"))  # a numeric dir without saved_model.pb: ignored
    srv = ModelServer(base, "age", grpc_port=0, rest_port=0,
                      file_system_poll_wait_seconds=0.2).start()
    try:
        grpc_client = GrpcClient(f"127.0.0.1:{srv.grpc_port}", timeout=20)
        rest = RestClient(f"127.0.0.1:{srv.rest_port}", timeout=20)
        first = grpc_client.predict(images[:1])[0]["age"]
        assert rest.status()["model_version_status"][0]["version"] == "1"

        other = tiny_models.make_job_dir(tmp_path / "job2", type="classification",
                                         predict_gender=True, seed=7)
        export_model.export_saved_model(other, base, version=6, photo_signature=False)
        assert _wait_for(lambda: srv.store._current.version == 6)
        status = {s["version"]: s["state"] for s in rest.status()["model_version_status"]}
        assert status == {"6": "AVAILABLE", "1": "END"}
        response_version = rest.metadata()["model_spec"]["version"]
        assert response_version == "6"
        second = grpc_client.predict(images[:1])[0]["age"]
        assert second != pytest.approx(first, abs=1e-6)
        code, body = rest.request("GET", "/v1/models/age/versions/1/metadata")
        assert code == 404

        # a broken newer version is reported and the good one keeps serving
        broken = os.path.join(base, "7")
        os.makedirs(broken)
        with open(os.path.join(broken, "saved_model.pb"), "wb") as f:
            f.write(b"not a saved model")
        assert _wait_for(lambda: 7 in srv.store._status and srv.store._status[7][0] == "END")
        states = {s["version"]: s for s in rest.status()["model_version_status"]}
        assert states["7"]["status"]["error_code"] != "OK"
        assert states["6"]["state"] == "AVAILABLE"
        assert grpc_client.predict(images[:1])[0]["age"] == pytest.approx(second, abs=1e-5)
        grpc_client.close()
        rest.close()
    finally:
        srv.stop()


def test_server_without_any_version_answers_not_found(tmp_path, images):
    srv = ModelServer(str(tmp_path / "empty"), "age", grpc_port=0, rest_port=0,
                      file_system_poll_wait_seconds=0).start()
    try:
        rest = RestClient(f"127.0.0.1:{srv.rest_port}", timeout=20)
        code, body = rest.request("GET", "/v1/models/age/metadata")
        assert code == 404 and "Servable not found" in body["error"]
        rest.close()
    finally:
        srv.stop()


def test_a_version_copied_non_atomically_is_retried_until_it_loads(job_dir, tmp_path, images):
    # `cp -r` writes saved_model.pb before variables/: the poller sees a version that does
    # not load yet. It used to be marked failed for good; it must load once it is whole.
    import shutil

    base = str(tmp_path / "age")
    export_model.export_saved_model(job_dir, base, photo_signature=False)
    staging = str(tmp_path / "staging")
    other = tiny_models.make_job_dir(tmp_path / "job2", type="classification", predict_gender=True,
                                     seed=7)
    export_model.export_saved_model(other, staging, version=2, photo_signature=False)
    srv = ModelServer(base, "age", grpc_port=0, rest_port=0,
                      file_system_poll_wait_seconds=0.2).start()
    rest = RestClient(f"127.0.0.1:{srv.rest_port}", timeout=20)
    try:
        first = rest.predict(images[:1])[0]["age"]
        copy = os.path.join(base, "2")
        os.makedirs(copy)
        shutil.copy(os.path.join(staging, "2", "saved_model.pb"), copy)

        def state(version):
            states = {s["version"]: s for s in rest.status()["model_version_status"]}
            return states.get(version)
        assert _wait_for(lambda: state("2") and state("2")["status"]["error_code"] != "OK", 20)
        assert "failed to load" in state("2")["status"]["error_message"]
        assert state("1")["state"] == "AVAILABLE"  # the old version serves meanwhile
        assert rest.predict(images[:1])[0]["age"] == pytest.approx(first, abs=1e-6)

        for name in os.listdir(os.path.join(staging, "2")):  # the rest of the copy lands
            source = os.path.join(staging, "2", name)
            if os.path.isdir(source):
                shutil.copytree(source, os.path.join(copy, name))
            elif name != "saved_model.pb":
                shutil.copy(source, copy)
        assert _wait_for(lambda: state("2")["state"] == "AVAILABLE", 20), state("2")
        assert state("2")["status"] == {"error_code": "OK", "error_message": ""}
        assert rest.predict(images[:1])[0]["age"] != pytest.approx(first, abs=1e-6)
    finally:
        rest.close()
        srv.stop()
