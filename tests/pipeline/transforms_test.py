"""Per-image conversion and the placement rules (split, shard, dedup)."""
import hashlib
import random

import numpy as np
import pytest
import tensorflow as tf

from agegender import age_histogram, image_sources, names, preprocessing, schema
from agegender.image_sources import Skip
from pipeline import transforms
from pipeline.transforms import Face

FRACTIONS = (("train", 0.8), ("validation", 0.1), ("test", 0.1))


@pytest.fixture(scope="module")
def make():
    fn = transforms.MakeRecord(image_size=32, age_deviation=3.0)
    fn.setup()
    return fn


def _run(make, name, data):
    out = list(make.process([(name, data)]))
    assert len(out) == 1
    return out[0] if hasattr(out[0], "tag") else Face._make(out[0])


def test_record_matches_the_schema(make, tools):
    data = tools.image_bytes(1, size=(50, 30))
    face = _run(make, "25_1_3_20170101000000001.jpg.chip.jpg", data)
    assert isinstance(face, Face)
    parsed = {k: v.numpy() for k, v in schema.parse_examples(tf.constant(face.example)).items()}
    pixels = preprocessing.decode_rgb(data).numpy()
    assert parsed[schema.IMAGE_SHA256].decode() == hashlib.sha256(pixels.tobytes()).hexdigest()
    assert face.sha256 == parsed[schema.IMAGE_SHA256].decode()
    assert (parsed[schema.AGE], parsed[schema.GENDER], parsed[schema.RACE]) == (25, 1, 3)
    assert parsed[schema.IMAGE_HEIGHT] == parsed[schema.IMAGE_WIDTH] == 32
    assert tf.io.decode_jpeg(parsed[schema.IMAGE_ENCODED]).shape == (32, 32, 3)
    np.testing.assert_array_equal(parsed[schema.AGE_HISTOGRAM], age_histogram.age_histogram(25, 3.0))
    assert parsed[schema.IMAGE_SOURCE_ID] == b"25_1_3_20170101000000001.jpg.chip.jpg"


@pytest.mark.parametrize("mode,fmt", [("L", "JPEG"), ("CMYK", "JPEG"), ("RGBA", "PNG"), ("P", "PNG")])
def test_any_image_format_becomes_rgb_jpeg(make, tools, mode, fmt):
    face = _run(make, "30_0_0_20170101000000001.jpg", tools.image_bytes(2, mode=mode, fmt=fmt))
    encoded = schema.parse_examples(tf.constant(face.example))[schema.IMAGE_ENCODED]
    assert tf.io.decode_jpeg(encoded).shape == (32, 32, 3)


def test_bad_bytes_and_bad_names_are_skips_with_reasons(make, tools):
    good = tools.image_bytes(3)
    cases = {
        ("30_0_0_20170101000000001.jpg", b""): image_sources.EMPTY_FILE,
        ("30_0_0_20170101000000001.jpg", good[:len(good) // 2]): image_sources.UNDECODABLE,
        ("30_0_0_20170101000000001.jpg", b"plain text"): image_sources.UNDECODABLE,
        ("face.jpg", good): names.BAD_NAME,
        ("x_0_0_20170101000000001.jpg", good): names.BAD_AGE,
        ("30_3_0_20170101000000001.jpg", good): names.BAD_GENDER,
        ("117_0_0_20170101000000001.jpg", good): names.AGE_OUT_OF_RANGE,
    }
    for (name, data), reason in cases.items():
        out = _run(make, name, data)
        assert out.tag == transforms.SKIPPED
        assert (out.value.source_id, out.value.reason) == (name, reason), (name, out.value)
        assert out.value.detail


def test_an_undecodable_image_is_reported_by_what_the_decoder_said(make, tools):
    good = tools.image_bytes(3)
    out = _run(make, "30_0_0_20170101000000001.jpg", good[:len(good) // 2])
    assert out.value.reason == image_sources.UNDECODABLE
    assert "Invalid JPEG data" in out.value.detail
    # Not TF's op context, whose number depends on what the process traced before, so
    # the report would differ between workers and runners.
    assert "__inference" not in out.value.detail


def test_a_batch_gives_the_same_bytes_as_one_image_at_a_time(make, tools):
    inputs = [(f"{20 + i}_{i % 2}_0_2017010100000000{i}.jpg", tools.image_bytes(10 + i, size=size))
              for i, size in enumerate([(50, 30), (30, 50), (32, 32), (200, 200), (7, 9)])]
    inputs.append(("40_1_2_20170101000000009.png",
                   tools.image_bytes(20, size=(64, 48), mode="RGBA", fmt="PNG")))
    batched = list(make.process(inputs))
    alone = [out for element in inputs for out in make.process([element])]
    assert len(batched) == len(inputs) and not any(hasattr(o, "tag") for o in batched)
    assert batched == alone


def test_a_bad_image_in_a_batch_is_skipped_alone(make, tools):
    good = [(f"3{i}_0_0_2017010100000000{i}.jpg", tools.image_bytes(30 + i)) for i in range(4)]
    truncated = ("35_0_0_20170101000000005.jpg", good[0][1][:len(good[0][1]) // 2])
    batch = [good[0], truncated, good[1], ("36_0_0_x.jpg", b""), ("nolabel.jpg", good[2][1]),
             good[2], good[3]]
    out = list(make.process(batch))
    skips = {o.value.source_id: o.value.reason for o in out if hasattr(o, "tag")}
    assert skips == {truncated[0]: image_sources.UNDECODABLE, "36_0_0_x.jpg": image_sources.EMPTY_FILE,
                     "nolabel.jpg": names.BAD_NAME}
    faces = [o for o in out if not hasattr(o, "tag")]
    assert faces == [f for element in good for f in make.process([element])]


def test_batch_weight_bounds_the_pixels_of_a_batch(tools):
    assert transforms.batch_weight(("a", b"x" * 1000)) == 1
    big = transforms.batch_weight(("b", b"x" * (8 << 20)))  # an 8 MB photo
    assert big > transforms.MAX_BATCH_WEIGHT  # travels alone
    assert transforms.batch_weight(("c", tools.image_bytes(1, size=(200, 200)))) == 1  # a face
    # 2 KB on disk, 48 MB of pixels decoded: it travels alone too.
    small_file = tools.png_header_bomb(4000, 4000)
    assert len(small_file) < 4096
    assert transforms.batch_weight(("d", small_file)) > transforms.MAX_BATCH_WEIGHT


def test_files_are_grouped_by_size_and_read_in_batches_bounded_by_weight(tmp_path, tools):
    names = [f"{20 + i}_0_0_20170101000000{i:03d}.png" for i in range(6)]
    for i, name in enumerate(names):  # 2 KB each, 48 MB of pixels each: alone in a batch
        tools.write(str(tmp_path), name, tools.png_header_bomb(4000, 4000, mark=i))
    faces = [f"{30 + i}_1_0_20170101000001{i:03d}.jpg" for i in range(100)]
    for i, name in enumerate(faces):
        tools.write(str(tmp_path), name, tools.image_bytes(i))
    tools.write(str(tmp_path), "big.jpg", b"x" * (5 << 20))  # 5 MB: weight 81 from its size
    files = image_sources.list_inputs(str(tmp_path))
    groups = transforms.group_files(files)
    assert [item for group in groups for item in group] == files  # all of them, in order
    assert [len(g) for g in groups if any(i.source_id == "big.jpg" for i in g)] == [1]
    assert all(sum(1 + i.size // transforms.BATCH_WEIGHT_BYTES for i in g)
               <= transforms.MAX_BATCH_WEIGHT for g in groups if len(g) > 1)
    read = [out for group in groups for out in transforms.ReadFiles().process(group)]
    batches = [b for b in read if not hasattr(b, "tag")]
    assert sorted(s for b in batches for s, _ in b) == sorted(i.source_id for i in files)
    for batch in batches:
        if len(batch) > 1:
            assert sum(map(transforms.batch_weight, batch)) <= transforms.MAX_BATCH_WEIGHT
    assert sum(len(b) == 1 and b[0][0] in names for b in batches) == len(names)


def test_an_image_over_the_pixel_limit_is_skipped_before_decoding(tools):
    fn = transforms.MakeRecord(image_size=16, age_deviation=0, max_pixels=10_000)
    fn.setup()
    name = "30_0_0_20170101000000001.png"
    out = _run(fn, name, tools.png_header_bomb(20000, 20000))
    assert (out.tag, out.value.reason) == (transforms.SKIPPED, image_sources.IMAGE_TOO_LARGE)
    assert "20000x20000" in out.value.detail and "10,000" in out.value.detail
    assert isinstance(_run(fn, name, tools.image_bytes(1, size=(100, 100))), Face)  # 10,000: fine
    out = _run(fn, name, tools.image_bytes(1, size=(101, 100)))
    assert out.value.reason == image_sources.IMAGE_TOO_LARGE


def test_labels_csv_replaces_name_parsing(tools):
    rows = names.read_labels_csv("file,age,gender\nimg1.jpg,33,1\nimg2.jpg,abc,\n")
    fn = transforms.MakeRecord(image_size=16, age_deviation=0, labels_csv_rows=rows)
    fn.setup()
    data = tools.image_bytes(4)
    face = _run(fn, "some/dir/img1.jpg", data)
    assert (face.age, face.gender, face.race) == (33, 1, schema.UNKNOWN)
    assert _run(fn, "img2.jpg", data).value.reason == names.BAD_AGE
    assert _run(fn, "img3.jpg", data).value.reason == names.NOT_IN_LABELS


def _sha(i):
    return hashlib.sha256(str(i).encode()).hexdigest()


def _face(source_id, age=30, gender=0, race=0, sha="a" * 64):
    return Face(sha, source_id, age, gender, race, source_id.encode())


def test_resolve_copies():
    one = [_face("a")]
    assert transforms.resolve_copies(one) == (one, [])
    same = [_face("c"), _face("a"), _face("b", race=2)]  # race is not a training target
    kept, skips = transforms.resolve_copies(same)
    assert [f.source_id for f in kept] == ["a"]
    assert [(s.source_id, s.reason) for s in skips] == [("b", "duplicate"), ("c", "duplicate")]
    kept, skips = transforms.resolve_copies(same, keep_all=True)
    assert [f.source_id for f in kept] == ["a", "b", "c"] and skips == []
    for conflict in ([_face("a"), _face("b", age=31)], [_face("a"), _face("b", gender=1)]):
        kept, skips = transforms.resolve_copies(conflict, keep_all=True)
        assert kept == []
        assert [(s.source_id, s.reason) for s in skips] == [
            ("a", "conflicting_labels"), ("b", "conflicting_labels")]


def test_dedup_shard_sorts_by_hash_whatever_the_input_order():
    faces = [_face(f"id{i}", sha=_sha(i)) for i in range(50)]
    faces.append(_face("zz-copy", sha=_sha(7)))
    outputs = []
    for seed in range(3):
        shuffled = faces[:] + [None]
        random.Random(seed).shuffle(shuffled)
        out = transforms.DedupShard().process((("train", 0), shuffled))
        outputs.append([(o.tag, o.value) if hasattr(o, "tag") else o for o in out])
    assert outputs[0] == outputs[1] == outputs[2]
    (key, kept), = [o for o in outputs[0] if o[0] != transforms.SKIPPED]
    assert key == ("train", 0)
    assert [f.sha256 for f in kept] == sorted(_sha(i) for i in range(50))
    skips = [o[1] for o in outputs[0] if o[0] == transforms.SKIPPED]
    assert skips == [Skip("zz-copy", transforms.DUPLICATE, skips[0].detail)]
