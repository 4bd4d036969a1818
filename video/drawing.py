"""Tracked faces drawn on a video frame: a box per face in its track's colour, and a tag
"#3 34 ± 3 F 91%" (track id, the fused age with its spread, the fused gender and its
probability). A tentative face (not yet a track) gets a thin grey box and no tag; a box
the detector did not give (interpolated across a missed frame, or predicted) is drawn
thin in its track's colour, with the tag.

Why not `faces.drawing`: that draws one photo from its encoded bytes, in one colour, with
landmarks; a clip's frames are pixels already, and a person is followed by their colour.
The font is the same (Pillow's default, scaled to the frame).
"""
import functools

import numpy as np
from PIL import Image, ImageDraw, ImageFont

TEXT_COLOUR = (0, 0, 0)
TENTATIVE_COLOUR = (160, 160, 160)
# Light, distinct colours (black text stays readable on them), one per track id in turn.
PALETTE = ((255, 210, 0), (0, 220, 255), (120, 255, 120), (255, 150, 200), (255, 160, 60),
           (190, 170, 255), (200, 255, 0), (0, 255, 190))


@functools.lru_cache(maxsize=8)
def _font(size):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def label(answer, track_id=None):
    """'#3 34 ± 3 F 91%' from a fused `video.fusion.Answer` (parts it lacks left out)."""
    parts = [] if track_id is None else [f"#{track_id}"]
    if answer is not None:
        age = f"{answer.age:.0f}"
        if answer.age_std is not None:
            age += f" ± {max(1, round(answer.age_std))}"
        parts.append(age)
        if answer.gender is not None:
            parts.append(f"{answer.gender[0].upper()} {100 * answer.gender_probability:.0f}%")
    return " ".join(parts)


def draw(image, tracked):
    """A copy of `image` (uint8 [H, W, 3]) with `tracked` (`video.face_tracks.TrackedFace`s)
    drawn on it."""
    picture = Image.fromarray(np.asarray(image, np.uint8))
    canvas = ImageDraw.Draw(picture)
    side = max(picture.size)
    width = max(2, round(side / 400))
    font = _font(max(11, round(side / 48)))
    for item in tracked:
        x1, y1, x2, y2 = (float(v) for v in item.face.box)
        if item.track_id is None:
            canvas.rectangle([x1, y1, x2, y2], outline=TENTATIVE_COLOUR, width=1)
            continue
        colour = PALETTE[(item.track_id - 1) % len(PALETTE)]
        filled = getattr(item, "filled", False)
        canvas.rectangle([x1, y1, x2, y2], outline=colour, width=1 if filled else width)
        _tag(canvas, (x1, y1), label(item.answer, item.track_id), font, picture.size, colour)
    return np.asarray(picture)


def _tag(canvas, corner, text, font, size, colour):
    """`text` on a filled box above `corner` (below it when there is no room above)."""
    left, top, right, bottom = canvas.textbbox((0, 0), text, font=font)
    pad = max(2, (bottom - top) // 5)
    w, h = right - left + 2 * pad, bottom - top + 2 * pad
    x = min(max(0, corner[0]), max(0, size[0] - w))
    y = corner[1] - h if corner[1] - h >= 0 else corner[1]
    canvas.rectangle([x, y, x + w, y + h], fill=colour)
    canvas.text((x + pad - left, y + pad - top), text, fill=TEXT_COLOUR, font=font)
