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
