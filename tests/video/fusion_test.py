"""video.fusion: tempered products of per-frame answers, and fitting the temper."""
import math
import types

import numpy as np
import pytest

from video import fusion


def gaussian(mean, sd, bins=101):
    p = np.exp(-0.5 * ((np.arange(bins) - mean) / sd) ** 2)
    return p / p.sum()


def face(mean, sd, gender="female", probability=0.8):
    p = gaussian(mean, sd)
    return types.SimpleNamespace(age=float(p @ np.arange(101)), age_distribution=p,
                                 gender=gender, gender_probability=probability)


def test_one_frame_is_that_frames_answer():
    track = fusion.TrackFusion(fusion.FusionParams(temperature=1.0))
    track.add(face(30, 4))
    answer = track.answer()
    assert answer.age == pytest.approx(30, abs=0.01) and answer.frames == 1
    assert answer.age_std == pytest.approx(4, abs=0.05)
    # 80% central interval of N(30, 4): 30 -+ 1.28 * 4, read on one-year bins.
    assert answer.age_interval_80 == (25.0, 35.0)
    assert answer.gender == "female" and answer.gender_probability == pytest.approx(0.8)


def test_independent_frames_narrow_like_the_product_and_rho_one_does_not():
    for rho, expected_sd in ((0.0, 4 / math.sqrt(9)), (1.0, 4.0), (0.25, 4 / math.sqrt(3))):
        track = fusion.TrackFusion(fusion.FusionParams(rho=rho))
        for _ in range(9):
            track.add(face(40, 4))
        # rho 0.25: 9 frames are worth 9 / (1 + 8 / 4) = 3 independent looks.
        assert track.answer().age_std == pytest.approx(expected_sd, rel=0.03), rho


def test_an_unsure_frame_moves_the_answer_less():
    sure_then_unsure = fusion.TrackFusion(fusion.FusionParams(rho=0.0))
    sure_then_unsure.add(face(30, 3))
    sure_then_unsure.add(face(50, 15))
    sure_then_sure = fusion.TrackFusion(fusion.FusionParams(rho=0.0))
    sure_then_sure.add(face(30, 3))
    sure_then_sure.add(face(50, 3))
    assert sure_then_unsure.answer().age < 32 < sure_then_sure.answer().age


def test_gender_is_fused_on_log_odds():
    track = fusion.TrackFusion(fusion.FusionParams(gender_rho=0.0))
    track.add(face(30, 4, "female", 0.8))
    track.add(face(30, 4, "female", 0.8))
    assert track.answer().gender_probability == pytest.approx(16 / 17)
    track.add(face(30, 4, "male", 0.9))  # female 0.1: logit -log 9
    p = 1 / (1 + math.exp(-(2 * math.log(4) - math.log(9))))
    answer = track.answer()
    assert answer.gender == "female" and answer.gender_probability == pytest.approx(p)


def test_without_distributions_or_gender():
    track = fusion.TrackFusion()
    for age in (20.0, 30.0):
        track.add(types.SimpleNamespace(age=age, age_distribution=None, gender=None,
                                        gender_probability=None))
    answer = track.answer()
    assert answer.age == 25.0 and answer.age_interval_80 is None and answer.gender is None
    assert fusion.TrackFusion().answer() is None


def _correlated_tracks(rng, count, length, shared_sd=4.0, frame_sd=3.0, reported_sd=5.0):
    """Tracks whose frames err together (a person-level offset) and apart (per frame): the
    per-frame distributions are calibrated (N(observed, 5) for an error of sd 5)."""
    tracks = []
    for _ in range(count):
        true_age = rng.uniform(15, 70)
        offset = rng.normal(0, shared_sd)
        frames = [gaussian(true_age + offset + rng.normal(0, frame_sd), reported_sd)
                  for _ in range(length)]
        tracks.append((true_age, frames))
    return tracks


def test_fit_keeps_coverage_where_independence_loses_it():
    rng = np.random.default_rng(0)
    tracks = _correlated_tracks(rng, 150, 34)
    params = fusion.fit(tracks, rhos=np.linspace(0, 1, 21))
    assert 0.2 < params.rho < 0.9
    fitted = fusion.coverage_by_length(_correlated_tracks(rng, 150, 34), params)
    naive = fusion.coverage_by_length(tracks, fusion.FusionParams(rho=0.0))
    assert abs(fitted[34][1] - 0.8) < 0.1
    assert naive[34][1] < 0.6  # independent frames: the interval is far too narrow


def test_fit_gender_rho():
    rng = np.random.default_rng(1)
    gender_tracks = []
    for _ in range(100):
        female = bool(rng.integers(2))
        # Every frame of a person says about the same: strongly dependent frames.
        base = rng.uniform(0.55, 0.95)
        p = np.clip(base + rng.normal(0, 0.02, 20), 0.01, 0.99)
        right = rng.uniform() < base
        gender_tracks.append((female, p if right == female else 1 - p))
    params = fusion.fit([], gender_tracks, rhos=np.linspace(0, 1, 11))
    assert params.gender_rho >= 0.5


def test_params_load(tmp_path):
    path = tmp_path / "fusion.json"
    path.write_text('{"fusion": {"rho": 0.3, "gender_rho": 0.6}, "other": 1}')
    params = fusion.FusionParams.load(str(path))
    assert (params.rho, params.gender_rho, params.temperature) == (0.3, 0.6, 1.0)


def test_served_temperature_recovers_the_models_calibration():
    raw = gaussian(40, 6)
    for temperature in (0.75, 1.0, 1.6):
        z = np.exp(np.log(raw) / temperature)
        _, served_std, _ = fusion.spread(z / z.sum())
        found = fusion.served_temperature(types.SimpleNamespace(age_distribution=raw,
                                                                age_std=served_std))
        assert found == pytest.approx(temperature, rel=1e-3)
    assert fusion.served_temperature(types.SimpleNamespace(age_distribution=raw,
                                                           age_std=None)) is None
    assert fusion.served_temperature(types.SimpleNamespace(age_distribution=raw[:21],
                                                           age_std=3.0)) is None


def test_range_model_distributions_are_fused_by_their_ages():
    track = fusion.TrackFusion()
    for age in (20.0, 24.0):
        track.add(types.SimpleNamespace(age=age, age_distribution=np.full(21, 1 / 21),
                                        gender=None, gender_probability=None))
    assert track.answer().age == 22.0 and track.answer().age_interval_80 is None
