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
