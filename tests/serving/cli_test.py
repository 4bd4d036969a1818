"""The commands as a user runs them: `python -m serving.server` and `python -m serving.client`."""
import os
import subprocess
import sys

import pytest

from serving.server_process import ServerProcess

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


@pytest.mark.slow
def test_server_and_client_commands(model_base, images, tmp_path):
    server = ServerProcess(model_base).start(timeout=120)
    grpc_port, rest_port = server.grpc_port, server.rest_port
    try:
        assert "serving model 'age' version 1" in server.ready_line, server.ready_line
        assert f"127.0.0.1:{grpc_port}" in server.ready_line

        face = tmp_path / "25_1_2_20170116174525125.jpg.chip.jpg"
        face.write_bytes(images[0])
        other = tmp_path / "face.png"
        other.write_bytes(images[1])
        for protocol, port in (("grpc", grpc_port), ("rest", rest_port)):
            run = subprocess.run(
                [sys.executable, "-m", "serving.client", f"--server=127.0.0.1:{port}",
                 f"--protocol={protocol}", "--model_name=age", str(face), str(other)],
                cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
            assert run.returncode == 0, run.stderr
            assert run.stdout.count("Predicted age:") == 2
            assert run.stdout.count("predicted gender:") == 2
            assert "true age: 25, predicted gender:" in run.stdout
            assert "true gender: female" in run.stdout
        bad = subprocess.run(
            [sys.executable, "-m", "serving.client", f"--server=127.0.0.1:{grpc_port}",
             "--model_name=nope", str(face)], cwd=ROOT, env=ENV, capture_output=True, text=True,
            timeout=120)
        assert bad.returncode == 1 and "NOT_FOUND" in bad.stderr
    finally:
        assert server.stop() == 0, server.output()  # SIGTERM: a clean shutdown


@pytest.mark.parametrize("flag", ["--tensorflow_intra_op_parallelism=-1",
                                  "--num_batch_threads=0", "--max_batch_size=0",
                                  "--rest_api_max_connections=0", "--num_batch_threads=two",
                                  "--max_image_pixels=-1", "--rest_api_num_threads=0",
                                  "--rest_api_header_timeout=0", "--rest_api_idle_timeout=x",
                                  "--rest_api_min_body_rate=0"])
def test_server_refuses_impossible_settings_with_a_usage_error(model_base, flag, capsys):
    from serving import server

    with pytest.raises(SystemExit) as exit_info:  # argparse's usage error, before any start
        server.main([f"--model_base_path={model_base}", "--port=0", "--rest_api_port=0", flag])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert flag.split("=")[0] in err and "expected" in err
