"""Synthetic clips with labelled people: real UTKFace faces of one split moving in a scene.

No labelled video exists in `../shared`, so tests and `benchmarks/video.py` build clips:
faces of the records' `split` (`faces.utkface`; test split for figures, validation split to
fit the fusion temper) pasted with surroundings (`testing.synthetic_faces`'s context, so
the detector sees a face in a scene and not a square sticker) on a background, each person
moving along a smooth path (a sum of slow sinusoids), changing scale (log-size drifting
between `face_sizes`), tilting a little, crossing others (a fixed depth order: the nearer
person hides the farther one) and, for some, leaving the frame and coming back.

Per-frame degradations (each drawn per frame from `seed`): motion blur along the frame's
dominant motion, JPEG at a random quality, brightness flicker, and small faces (the size
range reaches down to `face_sizes[0]`).

`clip(...)` -> `Clip(frames, truth, people, fps)`: frames uint8 [H, W, 3]; `truth[i]`: the
visible people of frame i as (person index, box x1, y1, x2, y2: the face's square, only
when at least `min_visible` of it is inside the frame and not hidden by a nearer face);
`people[k]`: `Person(source, age, gender)`.
"""
import collections
import io
import math

import numpy as np
from PIL import Image, ImageFilter

from agegender import names
from faces import utkface
from testing import synthetic_faces

Clip = collections.namedtuple("Clip", ["frames", "truth", "people", "fps"])
Person = collections.namedtuple("Person", ["source", "age", "gender"])

DEGRADATIONS = ("motion_blur", "jpeg", "flicker")


class FaceSource:
    """(path, pixels) of `split` faces from `data_dir`, in an order drawn from `seed`, each
    used once."""

    def __init__(self, split, seed=0, data_dir=None):
        paths = utkface.list_files(data_dir or utkface.SHARED_UTKFACE)
        if not paths:
            raise ValueError(f"no face crops in {data_dir or utkface.SHARED_UTKFACE}")
        order = np.random.default_rng(seed).permutation(len(paths))
        self._faces = utkface.Crops(paths).in_split(split, order)
        self.split = split

    def take(self, n):
        out = []
        for _ in range(n):
            try:
                out.append(next(self._faces))
            except StopIteration:
                raise ValueError(f"ran out of {self.split}-split faces") from None
        return out


class _Mover:
    """One person's smooth path: centre, log-size and angle as sums of slow sinusoids."""

    def __init__(self, rng, width, height, face_sizes, seconds, leaves):
        self.width, self.height = width, height
        self.centre = np.array([rng.uniform(0.2, 0.8) * width, rng.uniform(0.25, 0.75) * height])
        self.amplitude = np.array([rng.uniform(0.15, 0.35) * width,
                                   rng.uniform(0.08, 0.22) * height])
        self.period = rng.uniform(3.0, 8.0, 2) * max(1.0, seconds / 6)
        self.phase = rng.uniform(0, 2 * math.pi, 2)
        lo, hi = math.log(face_sizes[0]), math.log(face_sizes[1])
        self.log_size_mid = rng.uniform(lo + 0.3 * (hi - lo), lo + 0.7 * (hi - lo))
        self.log_size_amp = 0.35 * (hi - lo) * rng.uniform(0.3, 1.0)
        self.size_period, self.size_phase = rng.uniform(4, 10), rng.uniform(0, 2 * math.pi)
        self.angle_amp, self.angle_phase = rng.uniform(0, 12), rng.uniform(0, 2 * math.pi)
        self.lo, self.hi = face_sizes
        # Leaving: during [start, start + length) the person walks out across the nearest
        # side and comes back the same way.
        self.leave = None
        if leaves:
            start = rng.uniform(0.25, 0.6) * seconds
            self.leave = (start, rng.uniform(0.6, 1.2), int(rng.integers(4)))

    def at(self, t):
        """(centre x, centre y, side, angle) at time t."""
        xy = self.centre + self.amplitude * np.sin(2 * math.pi * t / self.period + self.phase)
        side = math.exp(self.log_size_mid + self.log_size_amp *
                        math.sin(2 * math.pi * t / self.size_period + self.size_phase))
        side = min(max(side, self.lo), self.hi)
        if self.leave is not None:
            start, length, edge = self.leave
            ramp = 1.2  # seconds to walk out (and back)
            u = t - start
            depth = 0.0
            if 0 <= u < ramp:
                depth = u / ramp
            elif ramp <= u < ramp + length:
                depth = 1.0
            elif ramp + length <= u < 2 * ramp + length:
                depth = 1 - (u - ramp - length) / ramp
            depth = 0.5 - 0.5 * math.cos(math.pi * depth)  # eased
            target = [(-side, xy[1]), (self.width + side, xy[1]),
                      (xy[0], -side), (xy[0], self.height + side)][edge]
            xy = xy + depth * (np.array(target) - xy)
        angle = self.angle_amp * math.sin(2 * math.pi * t / 5.0 + self.angle_phase)
        return float(xy[0]), float(xy[1]), side, angle


def clip(faces, seed=0, *, frames=150, fps=25.0, width=640, height=480,
         face_sizes=(40, 160), leave_fraction=0.5, degrade=True, min_visible=0.7):
    """A `Clip` of `faces` ([(path, pixels)], e.g. `FaceSource.take(n)`) moving for
    `frames` frames; `leave_fraction` of the people leave the frame once and come back."""
    rng = np.random.default_rng(seed)
    seconds = frames / fps
    people, movers = [], []
    for k, (path, pixels) in enumerate(faces):
        labels = names.parse_name(path)
        people.append(Person(path, labels.age, labels.gender))
        movers.append(_Mover(rng, width, height, face_sizes, seconds,
                             rng.uniform() < leave_fraction))
    rendered = {}  # (person, side, angle) -> patch: sizes and angles repeat across frames
    background = synthetic_faces.background(rng, width, height)
    out_frames, truth = [], []
    depth_order = list(rng.permutation(len(faces)))  # drawn first = farthest
    previous = None
    for i in range(frames):
        t = i / fps
        picture = Image.fromarray(background)
        placed = []
        for k in depth_order:
            cx, cy, side, angle = movers[k].at(t)
            side = int(round(side / 4) * 4)  # quantised: rendered patches are reused
            key = (k, side, round(angle))
            if key not in rendered:
                rendered[key] = synthetic_faces._with_context(
                    faces[k][1], side, key[2], synthetic_faces.CONTEXT)
            patch, mask, offset = rendered[key]
            x, y = int(round(cx - side / 2)), int(round(cy - side / 2))
            picture.paste(patch, (x - offset, y - offset), mask)
            placed.append((k, (x, y, x + side, y + side)))
        frame = np.asarray(picture)
        visible = _visible(placed, width, height, min_visible)
        if degrade:
            frame = _degrade(rng, frame, placed, previous)
        previous = placed
        out_frames.append(frame)
        truth.append(visible)
    return Clip(out_frames, truth, people, fps)


def _visible(placed, width, height, min_visible):
    """(person, box) of faces with at least `min_visible` of their square in the frame and
    not covered by nearer faces (later in `placed`)."""
    out = []
    for n, (k, box) in enumerate(placed):
        x1, y1, x2, y2 = box
        area = (x2 - x1) * (y2 - y1)
        mask = np.zeros((y2 - y1, x2 - x1), bool)
        cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
        if cx2 <= cx1 or cy2 <= cy1:
            continue
        mask[cy1 - y1:cy2 - y1, cx1 - x1:cx2 - x1] = True
        for _, (ox1, oy1, ox2, oy2) in placed[n + 1:]:
            ix1, iy1, ix2, iy2 = max(ox1, x1), max(oy1, y1), min(ox2, x2), min(oy2, y2)
            if ix2 > ix1 and iy2 > iy1:
                mask[iy1 - y1:iy2 - y1, ix1 - x1:ix2 - x1] = False
        if mask.sum() >= min_visible * area:
            out.append((int(k), tuple(float(v) for v in box)))
    return out


def _degrade(rng, frame, placed, previous):
    """Motion blur (by the frame's fastest face's motion, 30% of frames), JPEG (quality
    30-90, every frame), brightness flicker (+-15%)."""
    picture = Image.fromarray(frame)
    if previous is not None and rng.uniform() < 0.3:
        motion = max((abs(b[0] - p[0]) + abs(b[1] - p[1]) for (_, b), (_, p)
                      in zip(placed, previous)), default=0)
        radius = min(4.0, 0.5 + motion / 6)
        picture = picture.filter(ImageFilter.BoxBlur(radius))
    gain = 1.0 + rng.uniform(-0.15, 0.15)
    pixels = np.clip(np.asarray(picture, np.float32) * gain, 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=int(rng.integers(30, 91)))
    return np.asarray(Image.open(io.BytesIO(out.getvalue())).convert("RGB"))
