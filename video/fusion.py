"""One answer per track: a track's per-frame calibrated answers fused into one (NumPy only).

Owns how repeated looks at one person become one age and one gender. The frames of a track
are looks at one true age, so their calibrated age distributions p_1..p_n are combined as a
tempered product:

    fused(a)  ∝  exp( tau_n * sum_i log p_i(a) / T )

- `T` (`temperature`) is a calibration temperature of single frames (1 when the analyzer's
  distributions are calibrated already, as `agegender.Face.age_distribution` is).
- `tau_n = 1 / (1 + (n - 1) * rho)` tempers for the fact that neighbouring frames are not
  independent looks: with rho = 0 the frames count as independent (the plain product, whose
  interval shrinks like 1/sqrt(n)); with rho = 1 the fused answer is the geometric mean of
  the frames (no narrowing at all). In between, n frames are worth n / (1 + (n - 1) rho)
  independent ones, at most 1 / rho however long the track: the design effect of
  correlated samples. rho is fitted on VALIDATION-split clips (`fit`) so that the fused 50%
  and 80% intervals keep their coverage at every track length.

A frame the model is unsure of (a small, blurred or turned face) has a wide distribution,
whose log is flat: it moves the product little, without any rule saying so. The gender
is fused alike on the log-odds: logit(fused) = tau_n * sum_i logit(p_i) / T_gender.
The displayed age is the fused distribution's mean; its intervals are central intervals of
the fused distribution, read as `agegender.heads` reads a single face's (first bin whose
CDF reaches each tail's level).

A model without a one-year distribution (a regression head, or the 5-year ranges of a
range head) gives frames with an age only: the fused age is their mean and no interval is
claimed.

`served_temperature(face)`: the served `age_distribution` output is the model's raw
distribution; its calibration temperature shows only in the served `age_std`. Solving
std(softmax(log p / T)) = age_std for T recovers it from any one face, so `FaceTracks`
fuses distributions calibrated as the model's own spread is, whatever model answers, and
the fitted `temperature` is what fusion adds on top (about 1).
"""
import dataclasses
import json
import math

import numpy as np

from agegender import schema

INTERVALS = (0.5, 0.8)
_FLOOR = 1e-12  # log(0) guard: a calibrated softmax never gives exactly 0 in float32


@dataclasses.dataclass(frozen=True)
class FusionParams:
    """The temper: `rho` (age), `gender_rho`, and single-frame temperatures."""
    rho: float = 0.1
    temperature: float = 1.0
    gender_rho: float = 0.1
    gender_temperature: float = 1.0

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def load(cls, path):
        with open(path) as f:
            values = json.load(f)
        values = values.get("fusion", values)
        return cls(**{k: float(values[k]) for k in cls.__dataclass_fields__ if k in values})


# What `video.annotate` and `video.session` use without --fusion_params: fitted by
# benchmarks/video.py on 127 validation-split tracks (40 clips) of the recipe's export
# (docs/video.md), where the test clips' fused 80% interval then held 84.8% of true ages.
# rho near 1: a person's frames err together (the model's error is the person's, not the
# frame's), so the fused interval narrows little while its centre averages the frames.
DEFAULT_PARAMS = FusionParams(rho=0.875, temperature=1.1, gender_rho=0.925)


def tau(n, rho):
    """The temper of a track of n frames: 1 / (1 + (n - 1) rho)."""
    return 1.0 / (1.0 + (max(n, 1) - 1) * rho)


@dataclasses.dataclass(frozen=True)
class Answer:
    """A track's fused answer (the fields of `agegender.Face` that a track has)."""
    age: float
    age_std: float | None
    age_interval_50: tuple[float, float] | None
    age_interval_80: tuple[float, float] | None
    gender: str | None
    gender_probability: float | None
    frames: int

    def to_dict(self):
        out = dataclasses.asdict(self)
        for key in ("age_interval_50", "age_interval_80"):
            out[key] = None if out[key] is None else list(out[key])
        return out


def spread(distribution):
    """(mean, std, {coverage: (first, last)}) of a distribution over ages 0..K-1."""
    p = np.asarray(distribution, np.float64)
    p = p / p.sum()
    ages = np.arange(len(p), dtype=np.float64)
    mean = float(p @ ages)
    std = float(math.sqrt(max(0.0, p @ ages ** 2 - mean ** 2)))
    cdf = np.cumsum(p)
    intervals = {}
    for coverage in INTERVALS:
        low = int(np.argmax(cdf >= (1 - coverage) / 2 - 1e-6))
        high = int(np.argmax(cdf >= (1 + coverage) / 2 - 1e-6))
        intervals[coverage] = (float(low), float(high))
    return mean, std, intervals


class TrackFusion:
    """Accumulates one track's frames: `add(face)` (any object with `age`,
    `age_distribution`, `gender`, `gender_probability`: `agegender.Face`), `answer()`."""

    def __init__(self, params=None):
        self.params = params or DEFAULT_PARAMS
        self.frames = 0
        self._log_sum = None       # sum of log p over frames with a distribution
        self._with_distribution = 0
        self._age_sum = 0.0
        self._logit_sum = 0.0
        self._with_gender = 0
        self._fused = None         # the fused distribution, until the next add

    def add(self, face):
        self.frames += 1
        self._fused = None
        self._age_sum += float(face.age)
        distribution = getattr(face, "age_distribution", None)
        # One-year bins only: a range model's distribution (5-year ranges) is fused by its
        # ages' mean, as a regression model's is.
        if distribution is not None and len(distribution) == schema.NUM_AGE_BINS:
            log_p = np.log(np.clip(np.asarray(distribution, np.float64), _FLOOR, None))
            self._log_sum = log_p if self._log_sum is None else self._log_sum + log_p
            self._with_distribution += 1
        female = female_probability(face)
        if female is not None:
            q = min(max(female, 1e-6), 1 - 1e-6)
            self._logit_sum += math.log(q / (1 - q))
            self._with_gender += 1

    def distribution(self):
        """The fused age distribution, or None (no frame carried one)."""
        if self._log_sum is None:
            return None
        if self._fused is None:
            p = self.params
            z = tau(self._with_distribution, p.rho) * self._log_sum / p.temperature
            z = np.exp(z - z.max())
            self._fused = z / z.sum()
            self._fused.setflags(write=False)
        return self._fused

    def female_probability(self):
        if not self._with_gender:
            return None
        p = self.params
        logit = tau(self._with_gender, p.gender_rho) * self._logit_sum / p.gender_temperature
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, logit))))

    def answer(self):
        """The fused `Answer` (None before any frame)."""
        if not self.frames:
            return None
        fused = self.distribution()
        if fused is None:
            age, std, intervals = self._age_sum / self.frames, None, {}
        else:
            age, std, intervals = spread(fused)
        female = self.female_probability()
        if female is None:
            gender, probability = None, None
        else:
            gender, probability = ("female", female) if female >= 0.5 else ("male", 1 - female)
        return Answer(age, std, intervals.get(0.5), intervals.get(0.8), gender, probability,
                      self.frames)


def served_temperature(face, low=0.05, high=20.0):
    """The calibration temperature T for which softmax(log p / T) of the face's raw
    `age_distribution` has the face's served `age_std`; None when the face lacks either,
    or its spread is not one such a T gives (bisection on log T; std grows with T)."""
    distribution = getattr(face, "age_distribution", None)
    std = getattr(face, "age_std", None)
    if distribution is None or std is None or len(distribution) != schema.NUM_AGE_BINS:
        return None
    log_p = np.log(np.clip(np.asarray(distribution, np.float64), _FLOOR, None))

    def spread_at(t):
        z = log_p / t
        z = np.exp(z - z.max())
        return spread(z)[1]
    if not spread_at(low) <= std <= spread_at(high):
        return None
    lo, hi = math.log(low), math.log(high)
    for _ in range(40):
        mid = (lo + hi) / 2
        if spread_at(math.exp(mid)) < std:
            lo = mid
        else:
            hi = mid
    return math.exp((lo + hi) / 2)


def female_probability(face):
    """A face's probability of "female" (from its gender and that gender's probability)."""
    gender, probability = getattr(face, "gender", None), getattr(face, "gender_probability", None)
    if gender is None or probability is None:
        return None
    return float(probability) if gender == "female" else 1.0 - float(probability)


# -- fitting the temper on labelled tracks ------------------------------------------------

def coverage_by_length(tracks, params, lengths=(1, 2, 3, 5, 8, 13, 21, 34, 55, 89)):
    """{n: (50% coverage, 80% coverage, tracks)} of the fused intervals after the first n
    frames of each labelled track. `tracks`: [(true_age, [per-frame distributions])]."""
    out = {}
    for n in lengths:
        hits50 = hits80 = total = 0
        for true_age, frames in tracks:
            if len(frames) < n:
                continue
            log_sum = np.log(np.clip(np.asarray(frames[:n], np.float64), _FLOOR, None)).sum(0)
            z = tau(n, params.rho) * log_sum / params.temperature
            z = np.exp(z - z.max())
            _, _, intervals = spread(z / z.sum())
            age = min(float(true_age), len(z) - 1)
            hits50 += intervals[0.5][0] <= age <= intervals[0.5][1]
            hits80 += intervals[0.8][0] <= age <= intervals[0.8][1]
            total += 1
        if total:
            out[n] = (hits50 / total, hits80 / total, total)
    return out


def fit(tracks, gender_tracks=(), rhos=None, temperatures=None):
    """`FusionParams` whose fused intervals keep their coverage on labelled tracks.

    `tracks`: [(true_age, [distribution per frame])]; `gender_tracks`: [(is_female,
    [female probability per frame])]. Age: the (rho, T) on the grid minimising the mean
    squared gap between the intervals' coverage and their nominal 50% / 80% over the
    track lengths of `coverage_by_length`. Gender: rho minimising the fused probability's
    log loss over the same prefix lengths (T_gender 1: the analyzer's probability is
    calibrated on single faces)."""
    rhos = np.linspace(0.0, 1.0, 41) if rhos is None else rhos
    temperatures = (1.0,) if temperatures is None else temperatures
    best = None
    for temperature in temperatures:
        for rho in rhos:
            params = FusionParams(float(rho), float(temperature))
            table = coverage_by_length(tracks, params)
            if not table:
                continue
            gap = np.mean([(c50 - 0.5) ** 2 + (c80 - 0.8) ** 2
                           for c50, c80, _ in table.values()])
            if best is None or gap < best[0]:
                best = (gap, params)
    age = best[1] if best else FusionParams()
    gender_rho = age.gender_rho
    if gender_tracks:
        losses = []
        for rho in rhos:
            loss = count = 0
            for is_female, frames in gender_tracks:
                logits = np.log(np.clip(frames, 1e-6, 1 - 1e-6) /
                                np.clip(1 - np.asarray(frames), 1e-6, 1))
                for n in (1, 2, 3, 5, 8, 13, 21, 34, 55, 89):
                    if len(frames) < n:
                        break
                    q = 1 / (1 + math.exp(-float(np.clip(tau(n, rho) * logits[:n].sum(),
                                                         -50, 50))))
                    q = min(max(q, 1e-6), 1 - 1e-6)
                    loss -= math.log(q if is_female else 1 - q)
                    count += 1
            losses.append(loss / max(count, 1))
        gender_rho = float(rhos[int(np.argmin(losses))])
    return dataclasses.replace(age, gender_rho=gender_rho)
