"""The template: the shipped default, the file format's checks, and the command."""
import json
import os
import shutil

import numpy as np
import pytest

from faces import template, utkface


def test_the_shipped_template_is_a_face_learnt_from_the_train_split():
    t = template.load()
    assert t.points.shape == (5, 2) and np.all((t.points > 0) & (t.points < 1))
    left_eye, right_eye, nose, mouth_left, mouth_right = t.points
    assert left_eye[0] < nose[0] < right_eye[0] and mouth_left[0] < nose[0] < mouth_right[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])
    # Learnt from the whole train split of the shared set, not a handful of crops.
    assert t.info["split"] == "train" and t.crops > 10000
    assert t.no_face < 0.05 * t.crops
    assert np.all(t.std < 0.05)  # aligned crops: the landmarks barely move


@pytest.mark.parametrize("text, message", [
    ("not json", "not a template"),
    ('{"std": []}', "not a template"),
    ('{"points": [[0.3, 0.3], [0.7, 0.3]]}', "5 finite"),
    ('{"points": [[0.3, 0.3], [0.7, 0.3], [0.5, 0.5], [0.3, 0.7], [0.7, NaN]]}', "5 finite"),
    ('{"points": [[0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]}', "degenerate"),
])
def test_malformed_template_files_are_refused(tmp_path, text, message):
    path = tmp_path / "t.json"
    path.write_text(text)
    with pytest.raises(template.TemplateError, match=message):
        template.load(str(path))


def test_a_missing_template_file_is_a_clear_error(tmp_path):
    with pytest.raises(template.TemplateError, match="cannot read"):
        template.load(str(tmp_path / "nope.json"))


def _crops_dir(utk_dir, tmp_path, tools, n=8):
    names = sorted(os.listdir(utk_dir))[500:500 + 40 * n:40]
    d = tmp_path / "crops"
    d.mkdir()
    for name in names:
        shutil.copy(os.path.join(utk_dir, name), d / name)
    (d / "noise.jpg").write_bytes(tools.encode(tools.noise_photo(3, 200, 200)))
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return d, names


@pytest.mark.integration
def test_the_command_computes_a_template_and_accounts_for_every_crop(utk_dir, tmp_path, tools):
    d, names = _crops_dir(utk_dir, tmp_path, tools)
    out = tmp_path / "template.json"
    assert template.main([f"--input={d}", f"--output={out}", "--split=all"]) == 0
    data = json.loads(out.read_text())
    assert data["crops"] + data["no_face"] == len(names) + 1  # the crops and the noise
    assert "noise.jpg" in data["no_face_examples"]
    assert data["skipped"] == {"other_split": 0, "undecodable": 1}
    computed = template.load(str(out))
    # Eight crops already land close to the mean of fifteen thousand.
    assert np.abs(computed.points - template.load().points).max() < 0.05


@pytest.mark.integration
def test_the_command_uses_only_the_records_train_split_by_default(utk_dir, tmp_path, tools):
    d, names = _crops_dir(utk_dir, tmp_path, tools)
    splits = [utkface.split_of_pixels(utkface.decode((d / n).read_bytes())) for n in names]
    noise_split = utkface.split_of_pixels(utkface.decode((d / "noise.jpg").read_bytes()))
    train = splits.count("train") + (noise_split == "train")
    out = tmp_path / "template.json"
    assert template.main([f"--input={d}", f"--output={out}", "--limit=100"]) == 0
    data = json.loads(out.read_text())
    assert data["crops"] + data["no_face"] == train
    assert data["skipped"]["other_split"] == len(names) + 1 - train
    # --limit stops early.
    assert template.main([f"--input={d}", f"--output={out}", "--limit=2"]) == 0
    data = json.loads(out.read_text())
    assert data["crops"] + data["no_face"] == 2


def test_the_command_refuses_bad_flags_and_empty_inputs(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        template.main([f"--input={tmp_path}", "--output=x.json", "--split=everything"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        template.main([f"--input={tmp_path}", "--output=x.json", "--split_fractions=0.5,0.5"])
    assert e.value.code == 2
    assert template.main([f"--input={tmp_path}", "--output=x.json"]) == 2
    assert "no files" in capsys.readouterr().err


def test_fingerprint_names_the_points_as_recorded():
    from faces import photo as photo_lib

    points = template.load().points
    assert template.fingerprint(points) == template.fingerprint(
        np.round(np.asarray(points, np.float64), 5))  # float32 or the file's rounding: same
    moved = np.asarray(points, np.float64).copy()
    moved[0, 0] += 0.001
    assert template.fingerprint(moved) != template.fingerprint(points)
    info = photo_lib.describe(select="score")
    assert info["template_sha256"] == template.fingerprint(points)
    assert info["select"] == "score" and info["detector"]["min_face_size"] == 20
    assert np.allclose(info["template"], points, atol=1e-5)
