"""TF Serving's directory layout: which directories are versions, for whom."""
import os

from agegender import model_layout


def _version(base, name, servable=True):
    path = os.path.join(base, name)
    os.makedirs(path)
    if servable:
        with open(os.path.join(path, model_layout.SAVED_MODEL_FILE), "wb") as f:
            f.write(b"x")
    return path


def test_versions_servable_or_any(tmp_path):
    base = str(tmp_path / "age")
    assert model_layout.versions(base) == [] and model_layout.newest_version(base) is None
    _version(base, "2")
    _version(base, "10")
    _version(base, "11", servable=False)  # being written by hand, or broken
    _version(base, ".tmp-12-abc")  # the exporter's temp dir
    _version(base, "v3")
    with open(os.path.join(base, "7"), "w") as f:  # a file, not a directory
        f.write("x")
    assert model_layout.versions(base) == [2, 10]  # numeric order, not string order
    assert model_layout.newest_version(base) == 10
    assert model_layout.versions(base, servable_only=False) == [2, 10, 11]
    assert model_layout.version_dir(base, 10) == os.path.join(base, "10")
    assert model_layout.is_saved_model_dir(os.path.join(base, "10"))
    assert not model_layout.is_saved_model_dir(base)


def test_serving_meta_graph_reads_the_signatures_without_loading(tmp_path):
    import pytest
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    class Doubler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def double(self, x):
            return {"y": 2 * x}

    module = Doubler()
    tf.saved_model.save(module, str(tmp_path / "1"), signatures={"twice": module.double})
    graph = model_layout.serving_meta_graph(str(tmp_path / "1"))
    assert "serve" in graph.meta_info_def.tags
    assert "twice" in graph.signature_def
    assert list(graph.signature_def["twice"].outputs) == ["y"]
    (tmp_path / "2").mkdir()
    (tmp_path / "2" / model_layout.SAVED_MODEL_FILE).write_bytes(b"\xff not a proto \x00")
    with pytest.raises(DecodeError):
        model_layout.serving_meta_graph(str(tmp_path / "2"))
    (tmp_path / "3").mkdir()
    (tmp_path / "3" / model_layout.SAVED_MODEL_FILE).write_bytes(b"")
    with pytest.raises(ValueError, match="no graph"):
        model_layout.serving_meta_graph(str(tmp_path / "3"))
    with pytest.raises(tf.errors.NotFoundError):
        model_layout.serving_meta_graph(str(tmp_path / "4"))
