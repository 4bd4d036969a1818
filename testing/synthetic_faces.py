"""Synthetic "in-the-wild" photos: real test-split faces pasted on varied backgrounds.

No labelled photos with faces in context exist here, so tests and benchmarks
(`benchmarks/faces.py` and others) build them: UTKFace crops of the records' *test* split
(`faces.utkface`), scaled to a face side of `face_sizes` pixels (down to 40), rotated by up
to `max_rotation` degrees, placed without overlap at random offsets on a background
(uniform or blurred noise, gradients, stripes, checkerboards, random shapes, flat colour),
1 to 4 faces per photo. The same seed gives the same photos, and the same faces, sizes,
places, angles and backgrounds whatever `context` is.

Each `Photo` carries its uint8 pixels [H, W, 3], the ground-truth box of every face
(float [n, 4] as x1, y1, x2, y2 in pixels: the pasted crop's square before rotation, so a
detector's box on the face overlaps it with IoU well over 0.5) and the source file of each
face (its name holds the age label: `agegender.names.parse_name`).

`context` (a fraction of the face's side, 0 by default) is how a face meets the background:
- 0, hard-cut: the crop is resized, rotated at the photo's resolution and pasted as a
  square whose rotated-out corners are cut, so inside its truth box the background shows
  at the corners, and an aligned crop of it has background (stripes, checkers...) at its
  corners and edges, which a real photo never has. The photos every test was written on.
- > 0 (`CONTEXT` is what benchmarks/faces.py uses): the crop is extended past its edges by
  repeating its border pixels outward, rotated at the crop's own resolution (the photo
  samples the tilted face once, as a camera does, instead of resampling it again at
  40 px), and pasted with `context` x side of surroundings, turning with the face, that
  fade into the background over their outer half; the truth box is still the face's
  square, and holds only the face and its surroundings, never the background (up to
  about 17 degrees at context 0.25: tilted further, the box's corners reach the fade).

Limits: the surroundings are the crop's border pixels drawn out into streaks, not a real
head, neck and body (hair and collars continue, shoulders and ears do not appear); with
context the faces' own outlines are softer than in a photo, so the detector finds
slightly fewer of the hardest ones (profiles, hats) than hard-cut; backgrounds hold no
faces (no false positives are planted, though a streak can still look like one); faces do
not occlude each other (only their surroundings may overlap); lighting, blur and noise
are the crop's own, not the scene's.
"""
import collections
import math

import numpy as np
from PIL import Image, ImageDraw

from faces import utkface

Photo = collections.namedtuple("Photo", ["image", "boxes", "sources"])

# The surroundings benchmarks/faces.py gives every face by default: the measured honest proxy
# (docs/faces.md, "Faces"); 0 keeps the hard-cut photos.
CONTEXT = 0.25

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
            kind=None, context=0.0):
    """One photo holding `faces` (list of (source, uint8 pixels)); None if they cannot be
    placed at the drawn sizes. `context`: see `photos`. The random draws do not depend on
    `context`, so the same seed gives the same faces, sizes, places, angles and backgrounds
    with or without it."""
    if not 0 <= context <= 1:  # also refuses NaN
        raise ValueError(f"context {context}: a fraction of the face's side from 0 to 1")
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
    boxes, cores = [], []
    for (source, pixels), (x, y, size) in zip(faces, corners):
        angle = float(rng.uniform(-max_rotation, max_rotation))
        if context > 0:
            patch, mask, offset = _with_context(pixels, size, angle, context)
            photo.paste(patch, (x - offset, y - offset), mask)
            box = (offset, offset, offset + size, offset + size)
            cores.append((patch.crop(box), (x, y), mask.crop(box)))
        else:
            face = Image.fromarray(pixels).resize((size, size), Image.LANCZOS)
            mask = Image.new("L", (size, size), 255)
            if angle:
                # Rotated about the square's centre; the corners that leave the square are
                # cut, so the face stays inside its truth box.
                face = face.rotate(angle, resample=Image.BILINEAR)
                mask = mask.rotate(angle, resample=Image.BILINEAR)
            photo.paste(face, (x, y), mask)
        boxes.append((x, y, x + size, y + size))
    for core, corner, mask in cores:
        # Another face's surroundings may have been pasted over this face's box: the boxes
        # do not overlap, so pasting every box's own pixels last keeps each face whole.
        photo.paste(core, corner, mask)
    return Photo(np.asarray(photo), np.asarray(boxes, np.float32).reshape(-1, 4),
                 [source for source, _ in faces])


def _with_context(pixels, size, angle, context):
    """A face (uint8 pixels) with surroundings, as a `size` px face: (patch, mask, offset),
    the face's unrotated square at `offset` pixels from the patch's top-left corner.

    The crop is extended on every side by repeating its border pixels outward (so hair,
    skin and the crop's background continue past the crop's edge in their own colours;
    mirroring it instead would make symmetric, face-like patterns that the detector
    finds), rotated by `angle` about its centre at the crop's own resolution, and resized
    to the photo's scale: like a camera, the photo samples the tilted face once, with no
    second resampling at the photo's (coarser) resolution. The mask is drawn in the face's own frame, so it turns with the face: 255
    over the face's square and up to margin / 2 beyond it (margin = context * size), then
    fading to 0 at the margin (a raised cosine of the distance to the square), so the
    surroundings blend into the background with no edge.
    """
    face = Image.fromarray(pixels)
    if face.size[0] != face.size[1]:
        face = face.resize((max(face.size),) * 2, Image.LANCZOS)
    side = face.size[0]
    margin = context * size
    # The patch holds the faded square at any angle: half a diagonal plus the margin.
    offset = int(math.ceil(size / math.sqrt(2) + margin - size / 2))
    outer = size + 2 * offset
    half = outer / 2 * side / size  # the patch's half side in crop pixels
    # Padding enough that the rotated square of side 2 * half is still all image.
    pad = int(math.ceil(half * math.sqrt(2) - side / 2)) + 2
    extended = Image.fromarray(np.pad(np.asarray(face), ((pad, pad), (pad, pad), (0, 0)),
                                      mode="edge"))
    if angle:
        extended = extended.rotate(angle, resample=Image.BICUBIC)  # about the face's centre
    centre = pad + side / 2
    patch = extended.resize((outer, outer), Image.LANCZOS,
                            box=(centre - half, centre - half, centre + half, centre + half))
    # Pixel centres in the face's frame: undo the rotation (PIL turns counter-clockwise
    # on screen, y down).
    v, u = np.mgrid[0:outer, 0:outer] + 0.5 - outer / 2
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    fu, fv = cos * u - sin * v, sin * u + cos * v
    outside_u = np.maximum(np.abs(fu) - size / 2, 0.0)
    outside_v = np.maximum(np.abs(fv) - size / 2, 0.0)
    distance = np.hypot(outside_u, outside_v)
    fade = np.clip((distance - margin / 2) / max(margin / 2, 1e-6), 0.0, 1.0)
    mask = np.round(255 * 0.5 * (1 + np.cos(math.pi * fade))).astype(np.uint8)
    return patch, Image.fromarray(mask), offset


def photos(count, seed=0, *, data_dir=None, width=640, height=480, faces_per_photo=(1, 4),
           face_sizes=(40, 300), max_rotation=15.0, split="test", fractions=None,
           context=0.0):
    """Yields `count` `Photo`s, the same ones for the same arguments.

    Faces come from `data_dir` (default: the shared UTKFace set), only from the records'
    `split`, each used once, in an order drawn from `seed`. The number of faces per photo is
    drawn from `faces_per_photo` (inclusive range). `context`: the surroundings of each
    face, as a fraction of its side (the module docstring; 0: hard-cut). Raises ValueError
    when the directory has too few faces of that split.
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
                            max_rotation=max_rotation, context=context)
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
