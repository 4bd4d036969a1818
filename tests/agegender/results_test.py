"""agegender.results: the API's answer types are frozen, comparable and JSON-ready."""
import dataclasses
import json

import numpy as np
import pytest

from agegender.results import Face, ModelInfo


def _face(**changes):
    fields = dict(box=(1.0, 2.0, 11.0, 22.0), landmarks=((3.0, 4.0),) * 5, score=0.99,
                  age=31.5, age_std=4.0, age_interval_50=(28.0, 35.0),
                  age_interval_80=(25.0, 38.0), age_distribution=np.full(101, 1 / 101),
                  gender="female", gender_probability=0.9)
    fields.update(changes)
    return Face(**fields)


def test_a_face_is_frozen_and_its_distribution_read_only():
    face = _face()
    with pytest.raises(dataclasses.FrozenInstanceError):
        face.age = 3
    with pytest.raises(ValueError, match="read-only"):
        face.age_distribution[0] = 1
    assert face.gender_index == 1 and face.area == 200.0
    assert face == _face(age_distribution=None)  # the array is not compared
    assert "age_distribution" not in repr(face)
    with pytest.raises(ValueError, match="gender must be"):
        _face(gender="F")


def test_to_dict_is_json_and_round_trips():
    face = _face()
    data = json.loads(json.dumps(face.to_dict()))
    assert data["box"] == [1.0, 2.0, 11.0, 22.0] and data["gender"] == "female"
    assert len(data["age_distribution"]) == 101
    back = Face(**{k: (tuple(tuple(p) for p in v) if k == "landmarks" else
                       tuple(v) if isinstance(v, list) and k != "age_distribution" else v)
                   for k, v in data.items()})
    assert back == face
    assert "age_distribution" not in face.to_dict(distribution=False)
    assert Face(age=3.0).to_dict()["box"] is None


def test_model_info_to_dict():
    info = ModelInfo(backend="rest", source="h:1", version=2, signatures=("a", "b"))
    assert json.loads(json.dumps(info.to_dict()))["signatures"] == ["a", "b"]


def test_the_api_imports_load_neither_tensorflow_nor_beam():
    """`from agegender import FaceAnalyzer, Face` (and the one reader, the wire clients and
    the serving client) in a fresh interpreter: the ground floor stays light."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = ("import sys\n"
            "from agegender import FaceAnalyzer, Face, AnalyzerError, photo_answers\n"
            "import analyzer.tf_serving, serving.client\n"
            "print(sorted(m for m in ('tensorflow', 'apache_beam', 'keras') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
