"""Listing crops and placing them in the records' splits, as the records job does."""
import io
import os

import numpy as np
from PIL import Image

from agegender import splits as splits_lib
from faces import utkface


def _image(seed, fmt="JPEG", size=(40, 30)):
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(out, fmt)
    return out.getvalue()


def test_split_is_the_records_jobs_split():
    """The records job's own conversion (MakeRecord: decode, hash) and split_of agree with
    utkface.split_of_pixels on the same bytes, for JPEG and PNG."""
    from pipeline import transforms

    make = transforms.MakeRecord(image_size=32, age_deviation=5)
    make.setup()
    datas = [_image(i, fmt) for i in range(12) for fmt in ("JPEG", "PNG")]
    converted = make._converted(datas)
    fractions = splits_lib.default_fractions()
    splits = set()
    for data, (sha256, _) in zip(datas, converted):
        expected = splits_lib.split_of(sha256, fractions)
        assert utkface.split_of_pixels(utkface.decode(data)) == expected
        splits.add(expected)
    assert len(splits) >= 2  # 24 images: not all in one split


def test_list_files_takes_directories_globs_and_files(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("a/1.jpg", "a/2.png", "3.jpg"):
        (tmp_path / name).write_bytes(b"x")
    assert [os.path.relpath(p, tmp_path) for p in utkface.list_files(str(tmp_path))] == [
        "3.jpg", "a/1.jpg", "a/2.png"]
    assert len(utkface.list_files(str(tmp_path / "*" / "*.png"))) == 1
    assert utkface.list_files(str(tmp_path / "3.jpg")) == [str(tmp_path / "3.jpg")]
    assert utkface.list_files(str(tmp_path / "missing")) == []


def test_crops_partition_every_decodable_file_and_skip_known_others(tmp_path, monkeypatch):
    paths = []
    for i in range(20):
        path = tmp_path / f"{i}.png"
        path.write_bytes(_image(100 + i, "PNG"))
        paths.append(str(path))
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    paths.append(str(tmp_path / "bad.jpg"))
    decoded = []
    real_decode = utkface.decode
    monkeypatch.setattr(utkface, "decode", lambda data: decoded.append(1) or real_decode(data))
    crops = utkface.Crops(paths)
    by_split = {s: [p for p, _ in crops.in_split(s)] for s in ("train", "validation", "test")}
    assert sorted(sum(by_split.values(), [])) == sorted(paths[:-1])
    # The first pass decodes every file once (the bad one included, then never again);
    # a later pass decodes only the files it yields.
    assert len(decoded) == 21 + len(by_split["validation"]) + len(by_split["test"])
    assert crops.visited() == {"in_split": 20, "other_split": 0, "undecodable": 1}
    assert crops.visited("test")["in_split"] == len(by_split["test"])
