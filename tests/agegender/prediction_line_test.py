"""agegender.prediction_line: the predict modes' lines, per image and per face of a photo."""
from agegender import prediction_line
from agegender.results import Face


def test_crop_line_keeps_the_original_format():
    line = prediction_line.prediction_line("dir/25_1_2_20170116174525125.jpg", 31.24, 1, 0.93,
                                           age_std=4.6, interval=(26, 37))
    assert line == ("25_1_2_20170116174525125.jpg: Predicted age: 31.2 ± 5 (80%: 26-37), "
                    "true age: 25, predicted gender: female (0.93), true gender: female")
    assert prediction_line.prediction_line("x.jpg", 40.0) == \
        "x.jpg: Predicted age: 40.0, true age: unknown"


def _face(box, age, gender="male", p=0.8):
    return Face(box=tuple(box), age=age, age_std=3.2, age_interval_80=(age - 4, age + 5),
                gender=gender, gender_probability=p)


def test_one_line_per_face_with_the_labels_on_the_largest():
    faces = [_face([0, 0, 10, 10], 20.0), _face([20, 30, 120, 150], 41.5, "female", 0.9)]
    lines = prediction_line.photo_lines("photos/44_1_0_photo00002.jpg", faces)
    assert lines == [
        "44_1_0_photo00002.jpg face 1/2 at (0, 0)-(10, 10): Predicted age: 20.0 ± 3 "
        "(80%: 16-25), predicted gender: male (0.80)",
        "44_1_0_photo00002.jpg face 2/2 at (20, 30)-(120, 150): Predicted age: 41.5 ± 3 "
        "(80%: 38-46), true age: 44, predicted gender: female (0.90), true gender: female"]
    assert prediction_line.face_label(faces[1]) == "42 ±3 F"


def test_a_photo_without_a_face_says_so():
    assert prediction_line.photo_lines("x/wall.png", []) == ["wall.png: no face found"]


def test_a_photo_without_labels_prints_no_truth():
    face = Face(box=(1, 2, 3, 4), age=9.0)
    line = prediction_line.photo_lines("holiday.jpg", [face])[0]
    assert line == "holiday.jpg face 1/1 at (1, 2)-(3, 4): Predicted age: 9.0"
    assert prediction_line.face_label(face) == "9"


def test_an_images_answer_reads_like_its_arguments():
    """answer_line on one image's Face, as `photo_answers.read_crops` reads the clients'
    rows (str letters, lists) and the in-process outputs (NumPy, bytes letters) alike."""
    import numpy as np

    from agegender import photo_answers

    want = prediction_line.prediction_line("dir/25_1_2_20170116174525125.jpg", 34.4, 1, 0.91,
                                           age_std=5.2, interval=(27, 41))
    assert "Predicted age: 34.4 ± 5 (80%: 27-41), true age: 25" in want
    client = {"age": [34.4], "age_std": [5.2], "age_interval_50": [[30.0, 38.0]],
              "age_interval_80": [[27.0, 41.0]], "gender": ["F"],
              "gender_probability": [[0.09, 0.91]], "key": ["k"]}
    numpy = {"age": np.float32([34.4]), "age_std": np.float32([5.2]),
             "age_interval_80": np.array([[27.0, 41.0]], np.float32),
             "gender": np.array([b"F"], object),
             "gender_probability": np.array([[0.09, 0.91]], np.float32)}
    for outputs, strict in ((client, True), (numpy, False)):
        (face,) = photo_answers.read_crops(outputs, strict=strict)
        line = prediction_line.answer_line("dir/25_1_2_20170116174525125.jpg", face)
        assert line == want


def test_an_answer_without_spread_or_gender():
    """A regression model without a gender head exports `age` (and `key`) only."""
    assert prediction_line.answer_line("x.jpg", Face(age=40.04)) == \
        "x.jpg: Predicted age: 40.0, true age: unknown"
    male = prediction_line.answer_line("y.jpg", Face(age=3.0, gender="male",
                                                     gender_probability=0.7))
    assert male == ("y.jpg: Predicted age: 3.0, true age: unknown, predicted gender: male "
                    "(0.70), true gender: unknown")
