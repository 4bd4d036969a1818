"""Synthetic "in-the-wild" photos: real test-split faces pasted on varied backgrounds.

No labelled photos with faces in context exist here, so tests and `benchmarks/faces.py`
build them: UTKFace crops of the records' *test* split (`faces.utkface`), scaled to a face
side of `face_sizes` pixels (down to 40), rotated by up to `max_rotation` degrees, placed
without overlap at random offsets on a background (uniform or blurred noise, gradients,
stripes, checkerboards, random shapes, flat colour), 1 to 4 faces per photo. The same
seed gives the same photos.

Each `Photo` carries its uint8 pixels [H, W, 3], the ground-truth box of every face
(float [n, 4] as x1, y1, x2, y2 in pixels: the pasted crop's square before rotation, so a
detector's box on the face overlaps it with IoU well over 0.5) and the source file of each
face (its name holds the age label: `agegender.names.parse_name`).

Limits: the faces are UTKFace's tight crops, so there is no hair, neck or body around them,
and their edges are hard; backgrounds hold no faces (no false positives are planted).
"""
import collections
import math

import numpy as np
from PIL import Image, ImageDraw

from faces import utkface

Photo = collections.namedtuple("Photo", ["image", "boxes", "sources"])

BACKGROUNDS = ("noise", "blurred_noise", "gradient", "stripes", "checker", "shapes", "flat")


def background(rng, width, height, kind=None):
    """uint8 [height, width, 3] background of `kind` (random when None)."""
    kind = kind or BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    colours = rng.integers(0, 256, (2, 3))
    if kind == "noise":
        centre = rng.integers(40, 216, 3)
        spread = rng.integers(10, 80)
        pixels = rng.normal(centre, spread, (height, width, 3))
    elif kind == "blurred_noise":
        cell = int(rng.integers(8, 64))
        small = rng.integers(0, 256, (max(1, height // cell), max(1, width // cell), 3))
        pixels = np.asarray(Image.fromarray(small.astype(np.uint8)).resize(
            (width, height), Image.BICUBIC), dtype=np.float64)
    elif kind == "gradient":
        angle = rng.uniform(0, 2 * math.pi)
        y, x = np.mgrid[0:height, 0:width]
        t = x * math.cos(angle) + y * math.sin(angle)
        t = (t - t.min()) / max(1e-6, np.ptp(t))
        pixels = colours[0] + t[..., None] * (colours[1] - colours[0])
    elif kind in ("stripes", "checker"):
        period = int(rng.integers(6, 60))
        y, x = np.mgrid[0:height, 0:width]
        on = (x // period) % 2 if kind == "stripes" else ((x // period) + (y // period)) % 2
        pixels = np.where(on[..., None] == 1, colours[0], colours[1])
    elif kind == "shapes":
        canvas = Image.new("RGB", (width, height), tuple(int(c) for c in colours[0]))
        draw = ImageDraw.Draw(canvas)
        for _ in range(int(rng.integers(5, 40))):
            x0, y0 = rng.integers(0, width), rng.integers(0, height)
            w, h = rng.integers(5, max(6, width // 3)), rng.integers(5, max(6, height // 3))
            shape = draw.ellipse if rng.integers(2) else draw.rectangle
            shape([int(x0), int(y0), int(x0 + w), int(y0 + h)],
                  fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        pixels = np.asarray(canvas, dtype=np.float64)
    elif kind == "flat":
        pixels = np.broadcast_to(colours[0], (height, width, 3))
    else:
        raise ValueError(f"unknown background {kind!r}; one of {BACKGROUNDS}")
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def _place(rng, width, height, sizes, gap=4, tries=200):
    """Top-left corners for squares of `sizes` inside the photo, not overlapping; None if
    they do not fit after `tries` random attempts."""
    placed = []
    for size in sizes:
        for _ in range(tries):
            x = int(rng.integers(0, width - size + 1))
            y = int(rng.integers(0, height - size + 1))
            if all(x + size + gap <= px or px + ps + gap <= x or
                   y + size + gap <= py or py + ps + gap <= y for px, py, ps in placed):
                placed.append((x, y, size))
                break
        else:
            return None
    return placed


def compose(rng, faces, width=640, height=480, *, face_sizes=(40, 300), max_rotation=15.0,
            kind=None):
    """One photo holding `faces` (list of (source, uint8 pixels)); None if they cannot be
    placed at the drawn sizes."""
    largest = min(face_sizes[1], int(0.9 * min(width, height)))
    smallest = min(face_sizes[0], largest)
    # Log-uniform sizes: as many small faces as large ones.
    sizes = [int(round(math.exp(rng.uniform(math.log(smallest), math.log(largest)))))
             for _ in faces]
    sizes = sorted(sizes, reverse=True)  # big ones first: they are the hard ones to fit
    corners = _place(rng, width, height, sizes)
    if corners is None:
        return None
    photo = Image.fromarray(background(rng, width, height, kind))
    boxes = []
    for (source, pixels), (x, y, size) in zip(faces, corners):
        face = Image.fromarray(pixels).resize((size, size), Image.LANCZOS)
        angle = float(rng.uniform(-max_rotation, max_rotation))
        mask = Image.new("L", (size, size), 255)
        if angle:
            # Rotated about the square's centre; the corners that leave the square are cut,
            # so the face stays inside its truth box.
            face = face.rotate(angle, resample=Image.BILINEAR)
            mask = mask.rotate(angle, resample=Image.BILINEAR)
        photo.paste(face, (x, y), mask)
        boxes.append((x, y, x + size, y + size))
    return Photo(np.asarray(photo), np.asarray(boxes, np.float32).reshape(-1, 4),
                 [source for source, _ in faces])


def photos(count, seed=0, *, data_dir=None, width=640, height=480, faces_per_photo=(1, 4),
           face_sizes=(40, 300), max_rotation=15.0, split="test", fractions=None):
    """Yields `count` `Photo`s, the same ones for the same arguments.

    Faces come from `data_dir` (default: the shared UTKFace set), only from the records'
    `split`, each used once, in an order drawn from `seed`. The number of faces per photo is
    drawn from `faces_per_photo` (inclusive range). Raises ValueError when the directory
    has too few faces of that split.
    """
    rng = np.random.default_rng(seed)
    paths = utkface.list_files(data_dir or utkface.SHARED_UTKFACE)
    if not paths:
        raise ValueError(f"no face crops found in {data_dir or utkface.SHARED_UTKFACE}")
    crops = utkface.Crops(paths, fractions)
    source = crops.in_split(split, rng.permutation(len(paths)))
    made = 0
    while made < count:
        n = int(rng.integers(faces_per_photo[0], faces_per_photo[1] + 1))
        faces = []
        for _ in range(n):
            try:
                faces.append(next(source))
            except StopIteration:
                raise ValueError(f"ran out of {split}-split faces in {data_dir} after "
                                 f"{made} photos") from None
        for _ in range(100):  # redraw sizes until they fit (usually the first draw does)
            photo = compose(rng, faces, width, height, face_sizes=face_sizes,
                            max_rotation=max_rotation)
            if photo is not None:
                break
        else:
            raise ValueError(f"{n} faces of {face_sizes} px do not fit in {width}x{height}")
        made += 1
        yield photo


def labelled_name(photo, index, ext="jpg"):
    """A UTKFace-style file name for `photo` carrying the labels of its largest face (the
    face a labelled photo's label belongs to): '<age>_<gender>_<race>_photo<index>.<ext>'."""
    from agegender import names

    sides = photo.boxes[:, 2] - photo.boxes[:, 0]
    labels = names.parse_name(photo.sources[int(np.argmax(sides))])
    return f"{labels.age}_{labels.gender}_{labels.race}_photo{index:05d}.{ext}"
