"""faces.drawing: boxes, landmarks and labels on a copy of the photo; the pixel limit first."""
import io

import numpy as np
import pytest
from PIL import Image

from agegender import image_header
from faces import drawing


def _photo(tools, width=200, height=150):
    return tools.encode(tools.noise_photo(3, width, height), "PNG")


def test_each_face_gets_its_box_landmarks_and_label(tools):
    data = _photo(tools)
    face = {"box": [40.0, 50.0, 120.0, 140.0], "landmarks": [[60, 80], [100, 80], [80, 100],
                                                               [65, 120], [95, 120]]}
    picture = drawing.draw(data, [face], ["31 ±5 F"])
    original = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.int16)
    drawn = np.asarray(picture, np.int16)
    assert drawn.shape == original.shape
    yellow = np.abs(drawn - drawing.BOX_COLOUR).sum(-1) < 10
    assert yellow[60:130, 40].all() and yellow[60:130, 120].all()  # left and right edges
    assert yellow[50 - 3, 45:60].any()  # the label's tag, above the box
    assert (np.abs(drawn[80, 60] - drawing.LANDMARK_COLOUR).sum() < 10)
    assert (drawn[126:136, 70:90] == original[126:136, 70:90]).all()  # the face is untouched


def test_a_photo_without_faces_says_so_and_a_bomb_is_never_decoded(tools, png_bomb):
    picture = drawing.draw(_photo(tools), [], [])
    tag = np.abs(np.asarray(picture, np.int16)[2:8, 2:40] - drawing.BOX_COLOUR).sum(-1) < 10
    assert tag.mean() > 0.5
    with pytest.raises(image_header.ImageTooLarge):
        drawing.draw(png_bomb, [], [])


def test_saved_copies_keep_their_names_and_never_overwrite_each_other(tools, tmp_path):
    picture = drawing.draw(_photo(tools), [], [])
    taken = set()
    first = drawing.save(picture, tmp_path, "a/x.jpg", taken)
    second = drawing.save(picture, tmp_path, "b/x.jpg", taken)
    odd = drawing.save(picture, tmp_path, "25_1_0_2017", taken)
    assert first.endswith("x.jpg") and second.endswith("x-2.jpg")
    assert odd.endswith("25_1_0_2017.png")
    assert Image.open(second).size == (200, 150)
