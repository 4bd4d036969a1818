"""Drawing found faces onto a copy of a photo: a box, the five landmarks and a label per face.

Owns the picture a person checks first (`--draw_dir` of `serving.client` and of trainer
predict mode): the photo as the detector saw it (first frame, no EXIF rotation: what
`tf.io.decode_image` decodes, so the boxes' pixel coordinates fit), each face's box
(`faces.boxes` convention), its landmarks as dots, and its label (e.g. "31 ±5 F") on a
filled tag above the box (inside it when the box touches the top edge). A photo without a
face gets a "no face found" tag in its corner.

The photo's header is checked against the pixel limit before PIL decodes it
(`agegender.image_header`), as on every other path.
"""
import io
import os

from PIL import Image, ImageDraw, ImageFont

from agegender import image_header

BOX_COLOUR = (255, 210, 0)
TEXT_COLOUR = (0, 0, 0)
LANDMARK_COLOUR = (0, 200, 255)
NO_FACE_TEXT = "no face found"


def _font(size):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def draw(image_bytes, faces, labels, max_pixels=image_header.DEFAULT_MAX_PIXELS):
    """A PIL RGB image: the photo with `faces` (`agegender.Face`s, or dicts with "box" and
    optional "landmarks" as `agegender.photo_answers.photo_faces` gives them) and one label
    string per face.
    Raises `image_header.ImageTooLarge` / `NotAnImage` before decoding a refused image."""
    image_header.check(image_bytes, max_pixels)
    with Image.open(io.BytesIO(image_bytes)) as opened:
        photo = opened.convert("RGB")
    canvas = ImageDraw.Draw(photo)
    side = max(photo.size)
    width = max(2, round(side / 320))
    font = _font(max(12, round(side / 40)))
    if not faces:
        _tag(canvas, (width, width), NO_FACE_TEXT, font, photo.size)
    for face, label in zip(faces, labels):
        box, points = ((face.box, face.landmarks) if hasattr(face, "box")
                       else (face["box"], face.get("landmarks")))
        x1, y1, x2, y2 = (float(v) for v in box)
        canvas.rectangle([x1, y1, x2, y2], outline=BOX_COLOUR, width=width)
        radius = max(1.5, width * 0.9)
        for x, y in points or []:
            canvas.ellipse([x - radius, y - radius, x + radius, y + radius],
                           fill=LANDMARK_COLOUR)
        _tag(canvas, (x1, y1), label, font, photo.size, above=True)
    return photo


def _tag(canvas, corner, text, font, size, above=False):
    """`text` on a filled box whose bottom-left (above) or top-left is at `corner`."""
    left, top, right, bottom = canvas.textbbox((0, 0), text, font=font)
    pad = max(2, (bottom - top) // 5)
    w, h = right - left + 2 * pad, bottom - top + 2 * pad
    x = min(max(0, corner[0]), max(0, size[0] - w))
    y = corner[1] - h if above and corner[1] - h >= 0 else corner[1]
    canvas.rectangle([x, y, x + w, y + h], fill=BOX_COLOUR)
    canvas.text((x + pad - left, y + pad - top), text, fill=TEXT_COLOUR, font=font)


def save(photo, draw_dir, source, taken=None):
    """Writes `photo` (a PIL image) into `draw_dir` under the source's file name (PNG when
    the name has no JPEG/PNG extension); `taken`: a set of paths written in this run, so two
    inputs with one name do not overwrite each other. Returns the path."""
    os.makedirs(draw_dir, exist_ok=True)
    name = os.path.basename(source) or "photo"
    stem, ext = os.path.splitext(name)
    if ext.lower() not in (".jpg", ".jpeg", ".png"):
        stem, ext = name, ".png"
    path = os.path.join(draw_dir, stem + ext)
    n = 1
    while taken is not None and path in taken:
        n += 1
        path = os.path.join(draw_dir, f"{stem}-{n}{ext}")
    if taken is not None:
        taken.add(path)
    # Full-resolution colour (no 4:2:0 subsampling): thin coloured lines stay sharp.
    options = {"quality": 92, "subsampling": 0} if ext.lower() in (".jpg", ".jpeg") else {}
    photo.save(path, **options)
    return path
