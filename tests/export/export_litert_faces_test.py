"""LiteRT export of the face detector's networks: each file answers like `faces.networks` on the
ai_edge_litert runtime (dynamic shapes included), carries the cascade's parameters and the
alignment template of the `faces` modules, and a failed check writes nothing."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from export import litert_metadata
from export import export_litert_faces as elf
from export.errors import ExportError
from faces import detector as detector_lib
from faces import networks
from faces import photo
from faces import template as template_lib

# float32 files: summation order only (the export's own threshold is 5e-6).
RAW_TOL = 1e-5


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("faces_litert")
    metadata = elf.export_faces(str(out), "none")
    return str(out), metadata


def _lite(directory, name):
    with open(os.path.join(directory, elf.FILES[name]), "rb") as f:
        return elf.LiteRTNetwork(f.read())


def _tf_outputs(network, x):
    return [np.asarray(t) for t in network(tf.constant(x))]


def _smooth(rng, shape):
    """Image-like normalised input: a colour gradient with a little noise, in [-1, 1]."""
    n, h, w, _ = shape
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    colour = rng.uniform(-1, 1, (n, 1, 1, 3))
    x = 0.5 * colour + 0.4 * (yy + xx)[None, :, :, None] * colour + rng.normal(0, 0.05, shape)
    return np.clip(x, -1, 1).astype(np.float32)


@pytest.mark.parametrize("height, width", [(12, 12), (61, 45), (100, 133)])
def test_pnet_file_answers_like_the_tf_network_at_any_size(exported, height, width):
    directory, _ = exported
    lite = _lite(directory, networks.PNET)
    tf_pnet = networks.PNet()
    rng = np.random.default_rng(height * width)
    for x in (rng.uniform(-1, 1, (1, height, width, 3)).astype(np.float32),
              _smooth(rng, (1, height, width, 3))):
        probability, offsets = _tf_outputs(tf_pnet, x)
        out = lite(x)
        # Same grid as the TF network: one cell per 12x12 window, stride 2.
        assert out[elf.PROBABILITY].shape == probability.shape
        assert out[elf.OFFSETS].shape == offsets.shape
        np.testing.assert_allclose(out[elf.PROBABILITY], probability, atol=RAW_TOL)
        np.testing.assert_allclose(out[elf.OFFSETS], offsets, atol=RAW_TOL)


@pytest.mark.parametrize("name, cls, size, outputs", [
    (networks.RNET, networks.RNet, networks.RNET_SIZE, (elf.PROBABILITY, elf.OFFSETS)),
    (networks.ONET, networks.ONet, networks.ONET_SIZE,
     (elf.PROBABILITY, elf.OFFSETS, elf.LANDMARKS)),
])
def test_rnet_and_onet_files_answer_like_the_tf_networks_at_any_batch(exported, name, cls,
                                                                     size, outputs):
    directory, _ = exported
    lite = _lite(directory, name)
    network = cls()
    rng = np.random.default_rng(3)
    for n in (1, 5):
        for x in (rng.uniform(-1, 1, (n, size, size, 3)).astype(np.float32),
                  _smooth(rng, (n, size, size, 3))):
            out = lite(x)
            for key, expected in zip(outputs, _tf_outputs(network, x)):
                assert out[key].shape == expected.shape, key
                np.testing.assert_allclose(out[key], expected, atol=RAW_TOL, err_msg=key)


def test_files_hold_builtin_ops_only_and_no_control_flow(exported):
    from ai_edge_litert.tools import flatbuffer_utils

    directory, _ = exported
    for name, file_name in elf.FILES.items():
        with open(os.path.join(directory, file_name), "rb") as f:
            model = flatbuffer_utils.read_model_from_bytearray(bytearray(f.read()))
        assert len(model.subgraphs) == 1, name  # no IF/WHILE bodies: the empty-batch guard is out
        ops = {flatbuffer_utils.opcode_to_name(model, op.opcodeIndex)
               for op in model.subgraphs[0].operators}
        assert not ops & {"IF", "WHILE", "CUSTOM", "DELEGATE"}, (name, ops)


def test_metadata_holds_the_faces_modules_values(exported):
    directory, metadata = exported
    with open(os.path.join(directory, elf.METADATA_FILE)) as f:
        sidecar = json.load(f)
    assert sidecar == json.loads(json.dumps(metadata))
    cascade = sidecar["cascade"]
    assert cascade["parameters"] == detector_lib.settings(detector_lib.DetectorConfig())
    assert cascade["landmarks"] == list(detector_lib.LANDMARK_NAMES)
    assert (cascade["pnet_cell"], cascade["pnet_stride"], cascade["rnet_size"],
            cascade["onet_size"]) == (networks.PNET_CELL, networks.PNET_STRIDE,
                                      networks.RNET_SIZE, networks.ONET_SIZE)
    points = template_lib.load().points
    np.testing.assert_allclose(sidecar["alignment"]["template"], points, atol=1e-5)
    assert sidecar["alignment"]["template_sha256"] == template_lib.fingerprint(points)
    assert sidecar["alignment"]["select"] == photo.describe()["select"]
    assert "OUTSIDE" in sidecar["input"]["normalisation"]
    for name, file_name in elf.FILES.items():
        info = sidecar["networks"][name]
        with open(os.path.join(directory, file_name), "rb") as f:
            content = f.read()
        assert info["bytes"] == len(content)
        embedded = litert_metadata.read_metadata(content)
        assert embedded["network"] == name
        assert embedded["cascade"] == cascade and embedded["alignment"] == sidecar["alignment"]
        figures = info["check"]["max_abs_difference"]
        assert all(0 <= v <= elf.TOLERANCES["none"] for v in figures.values()), figures
    assert sidecar["networks"][networks.PNET]["io"][elf.INPUT]["shape"] == [1, -1, -1, 3]
    assert sidecar["networks"][networks.ONET]["io"][elf.INPUT]["shape"] == [
        -1, networks.ONET_SIZE, networks.ONET_SIZE, 3]


def test_a_network_that_fails_the_check_writes_nothing(tmp_path):
    # float16 differs from the TF network by its rounding: a zero tolerance refuses it.
    previous = tmp_path / "pnet.tflite"
    previous.write_bytes(b"an earlier good file")
    with pytest.raises(ExportError, match="does not answer like the TensorFlow network"):
        elf.export_faces(str(tmp_path), "float16", tolerance=0.0)
    assert sorted(os.listdir(tmp_path)) == ["pnet.tflite"]
    assert previous.read_bytes() == b"an earlier good file"


def test_bad_weights_and_modes_are_refused(tmp_path):
    with pytest.raises(ExportError, match="pnet"):
        elf.export_faces(str(tmp_path), weights={networks.PNET: [np.zeros(3, np.float32)]})
    with pytest.raises(ExportError, match="quantization"):
        elf.export_faces(str(tmp_path), "int8")
    assert os.listdir(tmp_path) == []


def test_cli_reports_a_refused_export(tmp_path, capsys):
    assert elf.main([f"--output_dir={tmp_path}", "--quantization=float16",
                     "--max_difference=0"]) == 2
    assert "does not answer like the TensorFlow network" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []
