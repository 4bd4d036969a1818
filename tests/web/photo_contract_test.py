"""web.photo_contract: the predict_photo request, and faces from answers of every shape."""
import base64
import json
import math

import pytest

from web import photo_contract


def answer(**outputs):
    return {"predictions": [outputs]}


PADDED = dict(
    num_faces=1,
    boxes=[[10, 20, 110, 140], [0, 0, 5, 5]],
    landmarks=[[[1, 2]] * 5, [[0, 0]] * 5],
    face_scores=[0.98, 0.0],
    age=[34.4, 99.0],
    age_std=[5.2, 1.0],
    age_interval_80=[[28, 41], [0, 0]],
    gender=["F", "M"],
    gender_probability=[[0.09, 0.91], [0.5, 0.5]],
    key=[""],
)


def test_request_body_is_tf_servings_row_format_for_predict_photo():
    body = photo_contract.request_body(b"\xff\xd8\xffjpeg")
    assert body["signature_name"] == "predict_photo"
    (instance,) = body["instances"]
    assert base64.b64decode(instance["image_bytes"]["b64"]) == b"\xff\xd8\xffjpeg"


def test_padding_beyond_num_faces_is_dropped():
    (face,) = photo_contract.faces(answer(**PADDED))
    assert face == {"box": [10.0, 20.0, 110.0, 140.0], "age": 34.4, "score": 0.98,
                    "landmarks": [[1.0, 2.0]] * 5, "age_std": 5.2,
                    "age_interval_80": [28.0, 41.0], "gender": "F",
                    "gender_probability": 0.91}


def test_male_probability_is_the_first_column():
    out = photo_contract.faces(answer(**{**PADDED, "gender": ["M", "M"]}))
    assert out[0]["gender_probability"] == pytest.approx(0.09)


def test_zero_faces_is_an_answer():
    assert photo_contract.faces(answer(**{**PADDED, "num_faces": 0})) == []


def test_regression_model_without_spread_or_gender():
    minimal = {k: PADDED[k] for k in ("num_faces", "boxes", "age", "key")}
    assert photo_contract.faces(answer(**minimal)) == [
        {"box": [10.0, 20.0, 110.0, 140.0], "age": 34.4}]


def test_non_finite_numbers_become_null():
    out = photo_contract.faces(answer(**{**PADDED, "age_std": [math.nan, 1.0],
                                         "age": [math.inf, 0.0]}))
    assert out[0]["age"] is None and out[0]["age_std"] is None


@pytest.mark.parametrize("payload, words", [
    ({"outputs": {}}, "predictions"),
    ({"predictions": [PADDED, PADDED]}, "predictions"),
    (answer(**{**PADDED, "num_faces": -1}), "num_faces"),
    (answer(**{**PADDED, "num_faces": "2"}), "num_faces"),
    (answer(**{**PADDED, "num_faces": 3}), "at least num_faces=3"),
    (answer(**{k: v for k, v in PADDED.items() if k != "boxes"}), "no 'boxes' output"),
    (answer(**{**PADDED, "boxes": [[1, 2, 3], [0, 0, 0]]}), "list of 4"),
    (answer(**{**PADDED, "age": ["old", 1]}), "not a number"),
    (answer(**{**PADDED, "gender": ["X", "M"]}), "one of"),
    ([1, 2], "predictions"),
])
def test_malformed_answers_are_refused_with_what_is_wrong(payload, words):
    with pytest.raises(photo_contract.ContractError, match=words):
        photo_contract.faces(payload)


def test_request_bytes_are_the_request_body_as_json():
    photo = bytes(range(256)) * 50
    assert json.loads(photo_contract.request_bytes(photo)) == photo_contract.request_body(photo)
