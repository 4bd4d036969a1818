"""agegender.photo_answers: padded predict_photo outputs -> each photo's faces."""
import numpy as np

from agegender import photo_answers


def _outputs():
    """Two photos, max_faces 3: the first with two faces, the second with none (as numpy)."""
    boxes = np.zeros((2, 3, 4), np.float32)
    boxes[0, 0] = [10, 10, 30, 40]  # 600 px^2
    boxes[0, 1] = [50, 5, 90, 45]  # 1600 px^2: the largest
    return {
        "num_faces": np.array([2, 0], np.int32), "boxes": boxes,
        "landmarks": np.zeros((2, 3, 5, 2), np.float32),
        "face_scores": np.array([[0.99, 0.95, 0], [0, 0, 0]], np.float32),
        "age": np.array([[31.5, 8.25, 0], [0, 0, 0]], np.float32),
        "gender": np.array([[b"F", b"M", b""], [b"", b"", b""]], dtype=object),
        "gender_probability": np.array([[[0.2, 0.8], [0.9, 0.1], [0, 0]],
                                        [[0, 0], [0, 0], [0, 0]]], np.float32),
        "key": np.array([b"a.jpg", b"b.jpg"], dtype=object),
    }


def test_padding_is_dropped_and_faces_are_plain_python():
    photos = photo_answers.photo_faces(_outputs())
    assert [p["num_faces"] for p in photos] == [2, 0] and photos[1]["faces"] == []
    assert [p["key"] for p in photos] == ["a.jpg", "b.jpg"]
    first, second = photos[0]["faces"]
    assert first["box"] == [10, 10, 30, 40] and first["age"] == 31.5
    assert first["gender"] == "F" and second["gender"] == "M"
    assert abs(first["score"] - 0.99) < 1e-6 and len(first["landmarks"]) == 5
    assert photo_answers.largest_face(photos[0]["faces"]) == 1
    assert photo_answers.largest_face([]) is None
    assert photo_answers.gender_index(first) == 1
    assert abs(photo_answers.gender_confidence(second) - 0.9) < 1e-6


def test_rest_json_answers_read_the_same():
    """REST gives nested lists and text: the same faces come out."""
    as_json = {k: (v.tolist() if v.dtype != object else
                   [[x.decode() for x in row] if isinstance(row, np.ndarray) else row.decode()
                    for row in v])
               for k, v in _outputs().items()}
    assert photo_answers.photo_faces(as_json) == photo_answers.photo_faces(_outputs())


def test_a_model_without_gender_has_none():
    out = {k: v for k, v in _outputs().items() if not k.startswith("gender")}
    face = photo_answers.photo_faces(out)[0]["faces"][0]
    assert photo_answers.gender_index(face) is None
    assert photo_answers.gender_confidence(face) is None


# -- typed faces, and the strict reading of untrusted answers ---------------------------

import json  # noqa: E402

import pytest  # noqa: E402

from agegender import Face, ServerError  # noqa: E402


def _json(outputs):
    """The outputs as a REST columnar answer holds them (lists, text)."""
    return json.loads(json.dumps({k: (v.tolist() if v.dtype != object else
                                      [[x.decode() for x in row] if isinstance(row, np.ndarray)
                                       else row.decode() for row in v])
                                  for k, v in outputs.items()}))


def test_faces_are_typed_and_gender_probability_is_the_chosen_genders():
    (first, second), none = [a.faces for a in photo_answers.read_photos(_outputs())]
    assert none == [] and isinstance(first, Face)
    assert first.box == (10, 10, 30, 40) and first.gender == "female"
    assert first.gender_probability == pytest.approx(0.8)  # of "F": not the [2] vector
    assert second.gender == "male" and second.gender_probability == pytest.approx(0.9)
    assert first.age_std is None and first.age_distribution is None  # not exported
    assert photo_answers.read_photos(_json(_outputs()), strict=True) == \
        photo_answers.read_photos(_outputs())


def test_rest_rows_and_columns_read_the_same():
    columns = _json(_outputs())
    rows = [{k: v[i] for k, v in columns.items()} for i in range(2)]
    assert photo_answers.read_rest({"predictions": rows}) == \
        photo_answers.read_rest({"outputs": columns})


@pytest.mark.parametrize("damage, message", [
    (lambda o: o.pop("num_faces"), "no 'num_faces' output"),
    (lambda o: o.update(num_faces=[2, True]), "should hold counts"),
    (lambda o: o.update(num_faces=[2, -1]), "should hold counts"),
    (lambda o: o.update(num_faces="2"), "list of counts"),
    (lambda o: o.update(num_faces=[4, 0]), "at least num_faces=4"),
    (lambda o: o.update(boxes=o["boxes"][:1]), "one entry per photo"),
    (lambda o: o["boxes"][0].__setitem__(1, [1, 2, 3]), "list of 4 numbers"),
    (lambda o: o["boxes"][0].__setitem__(1, [1, 2, 3, "4"]), "should be a number"),
    (lambda o: o["age"][0].__setitem__(0, float("nan")), "not a finite number"),
    (lambda o: o["age"][0].__setitem__(0, None), "should be a number"),
    (lambda o: o["gender"][0].__setitem__(0, "X"), "one of ('M', 'F')"),
    (lambda o: o["gender"][0].__setitem__(0, 7), "should be text"),
    (lambda o: o["gender_probability"][0].__setitem__(0, [0.5]), "list of 2 numbers"),
    (lambda o: o["landmarks"][0].__setitem__(0, [[0, 0]] * 4), "5 points"),
])
def test_a_malformed_answer_is_a_server_error_naming_what_is_wrong(damage, message):
    outputs = _json(_outputs())
    damage(outputs)
    with pytest.raises(ServerError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        photo_answers.read_photos(outputs, strict=True)
    assert e.value.code is None and "\n" not in str(e.value)


def test_an_answer_that_is_no_object_is_a_server_error():
    for payload in ([], {"predictions": "x"}, {"predictions": [1]}, {"outputs": []}, None):
        with pytest.raises(ServerError, match="'outputs' object|'predictions' list"):
            photo_answers.read_rest(payload)
    with pytest.raises(ServerError, match="missing from some photos"):
        photo_answers.read_rest({"predictions": [{"num_faces": 0}, {"num_faces": 0,
                                                                     "age": []}]})


def test_crop_answers_read_as_faces_without_a_box():
    outputs = {"age": np.float32([30.0, 41.5]), "gender": np.array([b"M", b"F"], object),
               "gender_probability": np.float32([[0.7, 0.3], [0.2, 0.8]]),
               "age_distribution": np.full((2, 101), 1 / 101, np.float32),
               "key": np.array([b"", b""], object)}
    faces = photo_answers.read_crops(outputs)
    assert [f.box for f in faces] == [None, None] and [f.age for f in faces] == [30.0, 41.5]
    assert [f.gender_probability for f in faces] == pytest.approx([0.7, 0.8])
    assert faces[0].age_distribution.shape == (101,)
    assert photo_answers.read_crops(_json(outputs), strict=True)[1].gender == "female"


def test_non_finite_optional_values_read_as_none_in_strict_mode():
    """JSON for browsers has no NaN: a spread or probability the model could not give is
    None (the face is kept); a non-finite age or box is a malformed answer."""
    outputs = _json(_outputs())
    outputs["gender_probability"][0][0] = [float("nan"), float("nan")]
    outputs["face_scores"][0][1] = float("inf")
    outputs["age_interval_80"] = [[[1.0, float("nan")], [2.0, 9.0], [0, 0]], [[0, 0]] * 3]
    first, second = photo_answers.read_photos(outputs, strict=True)[0].faces
    assert first.gender == "female" and first.gender_probability is None
    assert second.score is None and first.age_interval_80 is None
    assert second.age_interval_80 == (2.0, 9.0)
    outputs["boxes"][0][0][2] = float("nan")
    with pytest.raises(ServerError, match="'boxes' is not a finite number"):
        photo_answers.read_photos(outputs, strict=True)
