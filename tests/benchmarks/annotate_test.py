"""benchmarks.annotate's memory-run inputs: the links that repeat the photos up to a count,
and the refusal of counts that are not counts (fast: no model, no Beam run)."""
import os

import pytest

from benchmarks import annotate as bench


def _photos(tmp_path, count):
    paths = []
    for i in range(count):
        path = tmp_path / "src" / f"p{i}.jpg"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(bytes([i]))
        paths.append(str(path))
    return paths


def test_links_repeat_the_photos_in_turn_up_to_the_count(tmp_path):
    paths = _photos(tmp_path, 3)
    out = bench._link_dir(str(tmp_path / "links"), paths, 7)
    names = sorted(os.listdir(out))
    assert len(names) == 7 == len(set(names))
    targets = [os.readlink(os.path.join(out, n)) for n in names]
    # Every photo twice, the first one a third time; the listing order repeats the photos'.
    assert [targets.count(os.path.abspath(p)) for p in paths] == [3, 2, 2]
    assert [os.path.basename(t) for t in targets] == ["p0.jpg", "p1.jpg", "p2.jpg"] * 2 + [
        "p0.jpg"]


def test_links_default_to_one_per_photo_and_refuse_nothing_to_link(tmp_path):
    paths = _photos(tmp_path, 2)
    assert len(os.listdir(bench._link_dir(str(tmp_path / "one"), paths))) == 2
    with pytest.raises(ValueError, match="no paths"):
        bench._link_dir(str(tmp_path / "none"), [], 5)
    with pytest.raises(ValueError, match="must be >= 1"):
        bench._link_dir(str(tmp_path / "zero"), paths, 0)


@pytest.mark.parametrize("text", ["", "abc", "10,x", "0", "-5", "200,100", "100,100"])
def test_rss_photos_must_be_positive_ascending_counts(text, capsys):
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--model=unused", f"--rss_photos={text}"])
    assert exit_.value.code == 2
    assert "--rss_photos" in capsys.readouterr().err


def test_rss_photos_parses_a_list_of_counts():
    assert bench._counts("18970, 94850,189700") == [18970, 94850, 189700]


def test_negative_limits_are_refused(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--model=unused", "--rss_data_limit_mb=-1"])
    assert "must be >= 0" in capsys.readouterr().err


def test_links_of_a_larger_count_extend_the_directory_of_a_smaller_one(tmp_path):
    paths = _photos(tmp_path, 3)
    directory = str(tmp_path / "links")
    bench._link_dir(directory, paths, 4)
    bench._link_dir(directory, paths, 8, first=4)
    assert sorted(os.listdir(directory)) == sorted(os.listdir(
        bench._link_dir(str(tmp_path / "whole"), paths, 8)))
    with pytest.raises(ValueError, match=">= first"):
        bench._link_dir(directory, paths, 5, first=8)


def test_padded_copies_keep_the_photos_bytes_and_order(tmp_path):
    paths = _photos(tmp_path, 3)
    copies = bench._padded_dir(str(tmp_path / "padded"), paths, 1000)
    assert [os.path.getsize(c) for c in copies] == [1000] * 3
    for i, copy in enumerate(copies):
        data = open(copy, "rb").read()
        assert data[:1] == bytes([i]) and not any(data[1:])
    assert copies == sorted(copies)  # the listing's order is the photos' order


def test_negative_padding_is_refused(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--model=unused", "--pad_mb=-1"])
    assert "--pad_mb must be >= 0" in capsys.readouterr().err
