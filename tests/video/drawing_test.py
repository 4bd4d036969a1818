"""video.drawing: a box the detector did not give is drawn thin, in its track's colour."""
import numpy as np

from video import drawing, face_tracks, fusion


def test_filled_boxes_are_thin_and_keep_the_tag():
    answer = fusion.Answer(34.0, 3.0, None, None, "female", 0.9, 5)
    box = (40.0, 60.0, 120.0, 140.0)
    image = np.zeros((200, 400, 3), np.uint8)
    found = face_tracks.TrackedFace(1, face_tracks.FilledFace(box), answer)
    filled = face_tracks.TrackedFace(1, face_tracks.FilledFace(box), answer, interpolated=True)
    colour = np.array(drawing.PALETTE[0])
    for item, width in ((found, 2), (filled, 1)):
        picture = drawing.draw(image, [item])
        column = picture[100, 35:50]  # across the box's left edge at x 40
        assert (column == colour).all(axis=-1).sum() == width
        assert (picture[:60] == colour).all(axis=-1).any()  # the tag above the box
