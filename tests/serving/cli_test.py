"""The commands as a user runs them: `python -m serving.server` and `python -m serving.client`."""
import os
import subprocess
import sys

import numpy as np
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
                                  "--rest_api_min_body_rate=0", "--max_request_pixels=0",
                                  "--max_inflight_pixels=-1", "--max_request_pixels=x"])
def test_server_refuses_impossible_settings_with_a_usage_error(model_base, flag, capsys):
    from serving import server

    with pytest.raises(SystemExit) as exit_info:  # argparse's usage error, before any start
        server.main([f"--model_base_path={model_base}", "--port=0", "--rest_api_port=0", flag])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert flag.split("=")[0] in err and "expected" in err


def test_server_refuses_a_request_pixel_cap_over_three_quarters_of_the_budget(model_base,
                                                                             capsys):
    from serving import server

    with pytest.raises(SystemExit) as exit_info:
        server.main([f"--model_base_path={model_base}", "--port=0", "--rest_api_port=0",
                     "--max_request_pixels=80", "--max_inflight_pixels=100"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--max_request_pixels" in err and "3/4" in err


def test_client_prints_the_spread_of_each_images_age(server, images, reference, tmp_path,
                                                     capsys):
    """`python -m serving.client` on serving_default: 'Predicted age: X ± S (80%: A-B)', the
    model's own spread, as trainer predict mode prints it, over gRPC and REST alike."""
    import re

    from serving import client

    path = tmp_path / "25_1_2_20170116174525125.jpg.chip.jpg"
    path.write_bytes(images[0])
    want = {k: np.asarray(v) for k, v in reference([images[0]]).items()}
    std, (low, high) = float(want["age_std"][0]), want["age_interval_80"][0]
    expected = (f"Predicted age: {float(want['age'][0]):.1f} ± {std:.0f} "
                f"(80%: {low:.0f}-{high:.0f}), true age: 25, predicted gender: ")
    for protocol, port in (("grpc", server.grpc_port), ("rest", server.rest_port)):
        assert client.main([f"--server=127.0.0.1:{port}", f"--protocol={protocol}",
                            str(path)]) == 0
        (line,) = capsys.readouterr().out.splitlines()
        assert expected in line, line
        assert re.search(r"predicted gender: (male|female) \(\d\.\d\d\), true gender: female$",
                         line), line


def test_client_photos_prints_each_face_and_draws_them(server, synthetic_photos, photo_tools,
                                                       tmp_path, capsys, png_bomb):
    """`python -m serving.client --photos --draw_dir`: one line per face, "no face found",
    a refused photo fails alone; each drawn copy is the photo with yellow boxes on its faces."""
    from PIL import Image

    from serving import client
    from testing import synthetic_faces

    several = synthetic_photos(1, 1, faces_per_photo=(3, 3), face_sizes=(70, 150))[0]
    paths = [tmp_path / synthetic_faces.labelled_name(several, 0), tmp_path / "wall.png",
             tmp_path / "bomb.png"]
    paths[0].write_bytes(photo_tools.encode(several.image))
    paths[1].write_bytes(photo_tools.encode(photo_tools.plain(), "PNG"))
    paths[2].write_bytes(png_bomb)
    draw_dir = tmp_path / "drawn"
    for protocol, port in (("grpc", server.grpc_port), ("rest", server.rest_port)):
        status = client.main([f"--server=127.0.0.1:{port}", f"--protocol={protocol}",
                              "--photos", f"--draw_dir={draw_dir}", *map(str, paths)])
        out, err = capsys.readouterr()
        assert status == 1 and "bomb.png" in err  # the refused photo, and only it
        lines = out.splitlines()
        assert len(lines) == 4, out
        assert sum(f"{paths[0].name} face " in line for line in lines) == 3
        assert sum("true age:" in line for line in lines) == 1  # the largest face's line
        assert "wall.png: no face found" in lines
    drawn = Image.open(draw_dir / paths[0].name).convert("RGB")
    assert drawn.size == (several.image.shape[1], several.image.shape[0])
    pixels = np.asarray(drawn, np.int16)
    rest = client.RestClient(f"127.0.0.1:{server.rest_port}")
    faces = rest.predict_photos([paths[0].read_bytes()])[0]["faces"]
    rest.close()
    assert len(faces) == 3
    for face in faces:
        # The box's left edge, half way down, is drawn in the boxes' yellow.
        x1, y1, _, y2 = (int(round(v)) for v in face["box"])
        edge = pixels[(y1 + y2) // 2, max(0, x1 - 1):x1 + 2]
        assert (np.abs(edge - (255, 210, 0)).sum(axis=1) < 60).any(), edge
    assert (draw_dir / "wall.png").is_file()
    assert not (draw_dir / "bomb.png").exists()
