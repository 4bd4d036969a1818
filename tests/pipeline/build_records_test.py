"""The job end to end: bad inputs, archives, determinism, TFDS reading, real UTKFace images."""
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile

import pytest
import tensorflow as tf

from agegender import image_header, records, schema
from agegender import image_sources as sources
from pipeline import build_records, records_graph, runner_setup, transforms


def _read_all_splits_with_tfds(output_dir):
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(output_dir)
    counts = {}
    for split, info in builder.info.splits.items():
        examples = list(builder.as_dataset(split=split))
        counts[split] = len(examples)
        assert len(examples) == info.num_examples
        for ex in examples[:3]:
            assert ex[schema.IMAGE_ENCODED].dtype == tf.uint8
            assert ex[schema.AGE_HISTOGRAM].shape == (schema.NUM_AGE_BINS,)
            assert ex[schema.AGE].dtype == tf.int64
    return builder, counts


@pytest.mark.slow
def test_every_bad_input_is_reported_and_nothing_else_is_lost(bad_inputs, tmp_path, tools):
    input_dir, expected = bad_inputs
    out = str(tmp_path / "records")
    rc, report = tools.run_build(input_dir, out)
    assert rc == 0
    counts = report["counts"]
    # The invariant: every input is either written or listed with its reason.
    assert counts["inputs"] == len(expected) == counts["written"] + counts["skipped"]
    assert tools.skipped_by_source(report) == {
        name: reason for name, reason in expected.items() if reason is not None}
    written_ids = set()
    for split in schema.SPLITS:
        written_ids |= {r[schema.IMAGE_SOURCE_ID].decode() for r in tools.read_records(out, split)}
    assert written_ids == {name for name, reason in expected.items() if reason is None}
    assert counts["written"] == len(written_ids)
    conflict = [s for s in report["skipped"] if s["reason"] == transforms.CONFLICTING_LABELS]
    assert "age 50" in conflict[0]["detail"] and "age 53" in conflict[0]["detail"]

    meta = report["metadata"]
    assert meta[schema.META_AGE_DEVIATION] == 5.0 and meta[schema.META_IMAGE_SIZE] == 160
    assert meta["splits"] == {"train": 0.8, "validation": 0.1, "test": 0.1}
    assert records.metadata(out) == meta
    assert sum(counts["gender"].values()) == counts["written"]
    assert counts["race"]["unknown"] == 2  # the race-missing name and the seed's name
    assert counts["age_decade"]["0-9"] >= 1 and counts["age_decade"]["100+"] == 1

    builder, tfds_counts = _read_all_splits_with_tfds(out)
    assert set(tfds_counts) == set(schema.SPLITS)
    assert sum(tfds_counts.values()) == counts["written"]
    assert builder.info.metadata[schema.META_AGE_DEVIATION] == 5.0
    assert not os.path.exists(os.path.join(out, ".tmp-build_records"))


@pytest.mark.slow
def test_keep_duplicates_keeps_every_copy_in_one_split(bad_inputs, tmp_path, tools):
    input_dir, _ = bad_inputs
    out = str(tmp_path / "records")
    rc, report = tools.run_build(input_dir, out, "--keep_duplicates", "--split_fractions=0.5,0.25,0.25",
                                 "--image_size=64", "--age_deviation=2")
    assert rc == 0
    assert transforms.DUPLICATE not in report["counts"]["skipped_by_reason"]
    assert report["counts"]["skipped_by_reason"][transforms.CONFLICTING_LABELS] == 2
    by_sha = {}
    for split in schema.SPLITS:
        for r in tools.read_records(out, split):
            assert r[schema.IMAGE_HEIGHT] == 64
            by_sha.setdefault(r[schema.IMAGE_SHA256], set()).add(split)
    copies = [s for s, splits in by_sha.items() if len(splits) > 1]
    assert copies == []  # no image (or copy of one) in two splits
    assert records.metadata(out)[schema.META_AGE_DEVIATION] == 2.0


@pytest.mark.slow
def test_archives_give_the_same_records_as_the_directory_and_runs_are_byte_identical(
        tmp_path, tools):
    src = tmp_path / "faces"
    for i in range(24):
        tools.write(str(src), f"{20 + i}_{i % 2}_{i % 5}_20170101000000{i:03d}.jpg.chip.jpg",
                    tools.image_bytes(i))
    tools.write(str(src), "bad_name.jpg", tools.image_bytes(99))
    tgz, zp = str(tmp_path / "faces.tar.gz"), str(tmp_path / "faces.zip")
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(str(src), arcname=".")
    with zipfile.ZipFile(zp, "w") as zf:
        for name in sorted(os.listdir(src)):
            zf.write(str(src / name), arcname=name)
    results = {}
    # Each run is a separate run of the job: equal shards also show runs are byte-identical.
    for label, spec in [("dir", str(src)), ("tar.gz", tgz), ("zip", zp)]:
        out = str(tmp_path / f"out-{label}")
        rc, report = tools.run_build(spec, out)
        assert rc == 0, label
        assert report["counts"]["inputs"] == 25 and report["counts"]["written"] == 24, label
        results[label] = (tools.shard_files(out), report, out)
    shards = results["dir"][0]
    assert len(shards) == sum(v["shards"] for v in results["dir"][1]["splits"].values())
    for label in ("tar.gz", "zip"):
        assert results[label][0] == shards, f"{label} records differ from the directory's"
    for name in ("dataset_info.json", "features.json"):
        a, b = (open(os.path.join(results[k][2], name), "rb").read() for k in ("dir", "zip"))
        assert a == b, name
    a, b = (results[k][1] for k in ("dir", "zip"))
    a["metadata"]["options"].pop("input"), b["metadata"]["options"].pop("input")
    assert a == b  # the report differs only by the --input it names

    # A rerun into the same directory with other shard counts leaves no stale shard behind.
    out = results["dir"][2]
    rc, report = tools.run_build(str(src), out, "--min_shards=1")
    assert rc == 0
    assert len(tools.shard_files(out)) == 3
    _read_all_splits_with_tfds(out)


@pytest.mark.slow
def test_archive_with_escaping_member_is_reported_and_nothing_is_written_outside(
        tmp_path, tools):
    work = tmp_path / "work"
    work.mkdir()
    path = str(work / "evil.tar")
    with tarfile.open(path, "w") as tar:
        for i, name in enumerate(("../25_0_0_20170101000000001.jpg", "ok/26_0_0_20170101000000002.jpg",
                                  "../../27_0_0_20170101000000003.jpg")):
            data = tools.image_bytes(i)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out = str(work / "records")
    rc, report = tools.run_build(path, out)
    assert rc == 0
    assert report["counts"] == {**report["counts"], "inputs": 3, "written": 1, "skipped": 2}
    assert report["counts"]["skipped_by_reason"] == {sources.UNSAFE_ARCHIVE_PATH: 2}
    assert sorted(os.listdir(tmp_path)) == ["work"]
    assert not any(n.startswith(("25_", "27_")) for _, _, files in os.walk(tmp_path) for n in files)


def test_empty_input_is_a_clear_error(tmp_path, capsys, tools):
    (tmp_path / "empty").mkdir()
    rc, _ = tools.run_build(str(tmp_path / "empty"), str(tmp_path / "out"))
    assert rc == 2
    assert "contains no file" in capsys.readouterr().err
    rc, _ = tools.run_build(str(tmp_path / "none-*.jpg"), str(tmp_path / "out"))
    assert rc == 2
    assert "matches no file" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out")


def test_bad_flags_are_clear_errors(tmp_path, capsys, tools):
    with pytest.raises(SystemExit):
        build_records.main(["--input=x", "--output_dir=y", "--split=0.5,0.5"])
    assert "fractions" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_on_real_utkface_images_with_default_runner(tmp_path, tools):
    """~200 real images in a tar.gz, through the real CLI and its default runner options."""
    paths = tools.real_subset()
    tgz = str(tmp_path / "utk.tar.gz")
    with tarfile.open(tgz, "w:gz") as tar:
        for p in paths:
            tar.add(p, arcname=os.path.basename(p))
    out = str(tmp_path / "records")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.build_records", f"--input={tgz}", f"--output_dir={out}",
         "--progress_seconds=1e-6"],  # a progress line from every batch and shard
        cwd=tools.REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "written" in result.stdout
    # The workers' progress lines reach the terminal (the runner shows nothing meanwhile).
    assert re.search(r"^records job, worker \d+: \d+ images processed so far \(\d+/s\)$",
                     result.stderr, re.M), result.stderr[-3000:]
    assert re.search(r"^records job, worker \d+: \d+ records written so far", result.stderr,
                     re.M), result.stderr[-3000:]
    report = json.load(open(os.path.join(out, schema.REPORT_FILE)))
    counts = report["counts"]
    assert counts["inputs"] == len(paths) == counts["written"] + counts["skipped"]
    skipped = tools.skipped_by_source(report)
    assert skipped.get("14_0_0_20170110232651186.jpg.chip.jpg") == transforms.DUPLICATE
    assert skipped.get("10_0_0_20170110220644705.jpg.chip.jpg") == transforms.CONFLICTING_LABELS
    assert skipped.get("13_0_0_20170110232519225.jpg.chip.jpg") == transforms.CONFLICTING_LABELS
    assert "24_0_1_20170116220224657" not in skipped
    assert "39_1_20170116174525125.jpg.chip.jpg" not in skipped
    assert set(counts["skipped_by_reason"]) <= {transforms.DUPLICATE, transforms.CONFLICTING_LABELS}
    _, tfds_counts = _read_all_splits_with_tfds(out)
    assert all(tfds_counts[s] > 0 for s in schema.SPLITS)


def test_cli_empty_directory_exits_cleanly_without_a_trace(tmp_path, tools):
    (tmp_path / "empty").mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.build_records", f"--input={tmp_path / 'empty'}",
         f"--output_dir={tmp_path / 'out'}"],
        cwd=tools.REPO, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "build_records: error: the input directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_flags_go_to_beam_untouched():
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    args, beam_args = build_records._parser().parse_known_args(
        ["--input=x", "--output_dir=y", "--image=7", "--runner=FlinkRunner",
         "--direct_num_workers=3", "--flink_master=localhost:8081"])
    assert (args.input, args.image_size) == ("x", records_graph.DEFAULT_IMAGE_SIZE)
    assert beam_args == ["--image=7", "--runner=FlinkRunner", "--direct_num_workers=3",
                         "--flink_master=localhost:8081"]
    options = runner_setup.pipeline_options(beam_args)
    assert options.view_as(StandardOptions).runner == "FlinkRunner"
    assert options.view_as(DirectOptions).direct_num_workers == 3
    assert options.get_all_options()["flink_master"] == "localhost:8081"
    defaults = runner_setup.pipeline_options([])
    assert defaults.view_as(StandardOptions).runner == "DirectRunner"
    assert defaults.view_as(DirectOptions).direct_running_mode == "in_memory"
    assert defaults.view_as(DirectOptions).direct_num_workers == 0
    given = runner_setup.pipeline_options(["--direct_running_mode=multi_processing"])
    assert given.view_as(DirectOptions).direct_running_mode == "multi_processing"


def test_default_runner_converts_in_this_process_without_a_warning(tmp_path, tools, capsys,
                                                                    caplog):
    """The default DirectRunner options run the DoFns on threads of the job's own process
    (no worker process importing TensorFlow), and Beam's warning about in_memory with
    several workers, which does not apply, is not shown."""
    src = tmp_path / "faces"
    for i in range(4):
        tools.write(str(src), f"{20 + i}_{i % 2}_0_20170101000000{i:03d}.jpg", tools.image_bytes(i))
    rc = build_records.main([f"--input={src}", f"--output_dir={tmp_path / 'out'}",
                             "--direct_num_workers=2",  # 2 threads on any machine
                             "--progress_seconds=1e-9"])
    assert rc == 0
    err = capsys.readouterr().err
    workers = set(re.findall(r"^records job, worker (\d+): ", err, re.M))
    assert workers == {str(os.getpid())}, err[-2000:]
    assert not [r for r in caplog.records if "direct_num_workers" in r.getMessage()]


@pytest.mark.slow
def test_same_bytes_from_every_direct_running_mode(bad_inputs, tmp_path, tools):
    """Threads (the default), one in-memory worker and worker processes write the same
    shards, TFDS metadata and report.json, byte for byte, skips included."""
    src, expected = bad_inputs
    for path in tools.real_subset(150):  # real faces: several groups, so both workers work
        with open(path, "rb") as f:
            tools.write(src, os.path.basename(path), f.read())
    num_inputs = sum(len(files) for _, _, files in os.walk(src))
    outputs = {}
    for mode, workers in [("in_memory", 2), ("in_memory", 1), ("multi_processing", 2)]:
        out = str(tmp_path / f"out-{mode}-{workers}")
        rc, report = tools.run_build(src, out, f"--direct_running_mode={mode}",
                                     f"--direct_num_workers={workers}")
        assert rc == 0, mode
        assert report["counts"]["inputs"] == num_inputs, mode
        assert report["counts"]["skipped"] > len([x for x in expected.values() if x]), mode
        outputs[mode, workers] = {name: open(os.path.join(out, name), "rb").read()
                                  for name in sorted(os.listdir(out))}
    first, *others = outputs.values()
    assert len(first) > 4 and "report.json" in first
    for other in others:
        assert other == first


@pytest.mark.slow
def test_labels_csv_for_other_datasets(tmp_path, tools):
    src = tmp_path / "faces"
    for i, name in enumerate(("a.jpg", "b.png", "c.jpg", "d.jpg")):
        tools.write(str(src), name, tools.image_bytes(i, fmt="PNG" if name.endswith("png") else "JPEG"))
    csv = tmp_path / "labels.csv"
    csv.write_text("file,age,gender,race\na.jpg,30,1,2\nb.png,41,,\nd.jpg,200,0,0\n")
    rc, report = tools.run_build(str(src), str(tmp_path / "out"), f"--labels_csv={csv}")
    assert rc == 0
    assert tools.skipped_by_source(report) == {"c.jpg": "not_in_labels_csv", "d.jpg": "age_out_of_range"}
    assert report["counts"]["written"] == 2
    assert report["metadata"]["options"]["labels_csv"] == str(csv)
    rc, _ = tools.run_build(str(src), str(tmp_path / "out2"), f"--labels_csv={tmp_path / 'nope.csv'}")
    assert rc == 2


# -- hostile inputs: every one is a counted skip and the job still writes its report --------

def _faces(directory, tools, n=20):
    names = [f"{20 + i}_{i % 2}_{i % 5}_20170101000000{i:03d}.jpg" for i in range(n)]
    for i, name in enumerate(names):
        tools.write(str(directory), name, tools.image_bytes(i))
    return names


def _report(out):
    with open(os.path.join(out, schema.REPORT_FILE), encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.slow
def test_a_decompression_bomb_is_skipped_before_decoding(tmp_path, tools):
    """A 48 KB PNG declaring 20000x20000 (1.2 GB decoded) among 20 faces, in a memory cap."""
    src = tmp_path / "faces"
    _faces(src, tools)
    bomb = "30_1_0_20170101000000999.png"
    tools.write(str(src), bomb, tools.png_header_bomb(20000, 20000))
    out = str(tmp_path / "records")
    result = tools.run_cli_limited([f"--input={src}", f"--output_dir={out}"])
    assert result.returncode == 0, result.stderr[-3000:]
    report = _report(out)
    assert report["counts"]["written"] == 20
    assert tools.skipped_by_source(report) == {bomb: sources.IMAGE_TOO_LARGE}
    assert "20000x20000" in report["skipped"][0]["detail"]
    assert report["metadata"]["options"]["max_image_pixels"] == image_header.DEFAULT_MAX_PIXELS


@pytest.mark.slow
def test_max_image_pixels_is_a_flag(tmp_path, tools):
    src = tmp_path / "faces"
    names = _faces(src, tools, n=4)
    tools.write(str(src), "40_0_0_20170101000000100.jpg", tools.image_bytes(100, size=(30, 20)))
    rc, report = tools.run_build(str(src), str(tmp_path / "out"), "--max_image_pixels=1000")
    assert rc == 0
    # The faces are 48x40 = 1920 pixels, the last one 600.
    assert tools.skipped_by_source(report) == {n: sources.IMAGE_TOO_LARGE for n in names}
    assert report["counts"]["written"] == 1
    assert report["metadata"]["options"]["max_image_pixels"] == 1000


@pytest.mark.slow
def test_images_small_on_disk_but_large_decoded_are_not_batched_together(tmp_path, tools):
    """16 PNGs of 2 KB that decode to 48 MB each: one batch would hold 0.8 GB of pixels."""
    src = tmp_path / "faces"
    names = [f"{20 + i}_0_0_20170101000000{i:03d}.png" for i in range(16)]
    for i, name in enumerate(names):
        tools.write(str(src), name, tools.png_header_bomb(4000, 4000, mark=i))
    out = str(tmp_path / "records")
    result = tools.run_cli_limited([f"--input={src}", f"--output_dir={out}"])
    assert result.returncode == 0, result.stderr[-3000:]
    report = _report(out)
    assert report["counts"]["written"] == 16 and report["counts"]["skipped"] == 0


def test_file_names_that_are_not_utf8_are_skipped_not_fatal(tmp_path, tools):
    src = os.fsencode(str(tmp_path / "faces"))
    good = _faces(os.fsdecode(src), tools, n=6)
    bad = [b"\xff\xfe_1_0_x.jpg", b"31_0_0_20170101000000001\xe9.jpg", b"back\\slash\xff.jpg",
           b"sub\xff/32_0_0_20170101000000002.jpg"]
    for i, name in enumerate(bad):
        os.makedirs(os.path.dirname(os.path.join(src, name)), exist_ok=True)
        with open(os.path.join(src, name), "wb") as f:
            f.write(tools.image_bytes(50 + i))
    with tarfile.open(os.path.join(src, b"in.tar"), "w") as tar:  # tar names are bytes too
        for name, data in ((b"33_0_0_\xfe.jpg", tools.image_bytes(60)),
                           (b"34_0_0_20170101000000003.jpg", tools.image_bytes(61))):
            info = tarfile.TarInfo(os.fsdecode(name))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out = str(tmp_path / "records")
    rc, report = tools.run_build(os.fsdecode(src), out)
    assert rc == 0
    assert report["counts"]["inputs"] == len(good) + len(bad) + 2
    assert report["counts"]["written"] == len(good) + 1
    # Shown with \x escapes (backslashes doubled): one text per name, no two names alike.
    assert tools.skipped_by_source(report) == {
        "\\xff\\xfe_1_0_x.jpg": sources.BAD_FILE_NAME,
        "31_0_0_20170101000000001\\xe9.jpg": sources.BAD_FILE_NAME,
        "back\\\\slash\\xff.jpg": sources.BAD_FILE_NAME,
        "sub\\xff/32_0_0_20170101000000002.jpg": sources.BAD_FILE_NAME,
        "33_0_0_\\xfe.jpg": sources.BAD_FILE_NAME}


def _tar_of_large_members(path, tools, count, mb):
    """A tar.gz of `count` faces padded with zeros to `mb` MB each: small on disk, large read."""
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for i in range(count):
            face = tools.image_bytes(i)
            data = face + bytes(mb * 2 ** 20 - len(face))  # a JPEG decoder stops at its end
            info = tarfile.TarInfo(f"{20 + i}_0_0_20170101000000{i:03d}.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.mark.slow
def test_an_archive_expanding_to_gigabytes_is_read_in_bounded_memory(tmp_path, tools):
    """12 members of 60 MB (each under the per-file cap) from a few MB of tar.gz."""
    path = str(tmp_path / "big.tar.gz")
    _tar_of_large_members(path, tools, 12, 60)
    out = str(tmp_path / "records")
    # 2 GiB: a healthy run with the default --archive_spread_mb peaks at ~1.55 GB RSS (two
    # members spread, the rest converted one at a time); holding all 720 MB of members
    # between steps, as before, needs several times that.
    result = tools.run_cli_limited([f"--input={path}", f"--output_dir={out}"], data_limit=2 << 30)
    assert result.returncode == 0, result.stderr[-3000:]
    report = _report(out)
    assert report["counts"]["inputs"] == 12 == report["counts"]["written"]


@pytest.mark.slow
def test_archive_members_converted_in_place_give_the_same_records(tmp_path, tools):
    """--archive_spread_mb changes where members are converted, never the records."""
    src = tmp_path / "faces"
    _faces(src, tools, n=30)
    tools.write(str(src), "bad_name.jpg", tools.image_bytes(99))
    tools.write(str(src), "35_0_0_20170101000000500.png", tools.png_header_bomb(20000, 20000))
    tgz = str(tmp_path / "faces.tar.gz")
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(str(src), arcname=".")
    runs = {}
    for spread in ("128", "0.05", "0"):  # all spread, some, none
        out = str(tmp_path / f"out-{spread}")
        rc, report = tools.run_build(tgz, out, f"--archive_spread_mb={spread}")
        assert rc == 0
        runs[spread] = (tools.shard_files(out), report)
    assert runs["0"][1]["counts"]["inputs"] == 32 and runs["0"][1]["counts"]["written"] == 30
    for spread in ("0.05", "0"):
        assert runs[spread][0] == runs["128"][0]
        assert runs[spread][1] == runs["128"][1]


@pytest.mark.slow
@pytest.mark.parametrize("follow", [False, True])
def test_links_and_special_files_in_the_input_are_never_read(tmp_path, tools, follow):
    """A face outside the input, /etc/passwd, /dev/zero and a FIFO, behind or as entries.

    In a child with a memory limit and a timeout: reading /dev/zero exhausts memory and
    opening the FIFO waits forever.
    """
    src, outside = tmp_path / "faces", tmp_path / "outside"
    good = _faces(src, tools, n=6)
    tools.write(str(outside), "50_0_0_20170101000000050.jpg", tools.image_bytes(50))
    tools.write(str(outside / "dir"), "51_0_0_20170101000000051.jpg", tools.image_bytes(51))
    os.symlink(outside / "50_0_0_20170101000000050.jpg", src / "52_0_0_20170101000000052.jpg")
    os.symlink("/etc/passwd", src / "53_0_0_20170101000000053.jpg")
    os.symlink("/dev/zero", src / "54_0_0_20170101000000054.jpg")
    os.symlink(outside / "dir", src / "linked")
    os.mkfifo(src / "55_0_0_20170101000000055.jpg")
    out = str(tmp_path / "records")
    flags = ["--follow_symlinks"] if follow else []
    result = tools.run_cli_limited([f"--input={src}", f"--output_dir={out}", *flags], timeout=120)
    assert result.returncode == 0, (result.returncode, (result.stderr or "")[-3000:])
    report = _report(out)
    written = {r[schema.IMAGE_SOURCE_ID].decode()
               for split in schema.SPLITS for r in tools.read_records(out, split)}
    never = {"54_0_0_20170101000000054.jpg": sources.NOT_A_REGULAR_FILE,
             "55_0_0_20170101000000055.jpg": sources.NOT_A_REGULAR_FILE}
    if follow:
        assert written == {*good, "52_0_0_20170101000000052.jpg", "linked/51_0_0_20170101000000051.jpg"}
        assert tools.skipped_by_source(report) == {
            **never, "53_0_0_20170101000000053.jpg": sources.UNDECODABLE}
    else:
        assert written == set(good)
        assert tools.skipped_by_source(report) == {
            **never, **{name: sources.NOT_A_REGULAR_FILE for name in (
                "52_0_0_20170101000000052.jpg", "53_0_0_20170101000000053.jpg", "linked")}}
    assert report["metadata"]["options"]["follow_symlinks"] is follow


@pytest.mark.slow
def test_align_faces_writes_the_chosen_face_aligned(tmp_path, tools, synthetic_photos,
                                                    photo_tools):
    """--align_faces: each photo's largest (or most confident) face, aligned by faces.photo
    at --image_size, is the record's image; no face -> no_face; the dedup key is still the
    hash of the decoded input (a re-encoded copy is a duplicate); the template is in
    report.json."""
    import numpy as np

    from agegender import preprocessing, splits
    from faces import photo as photo_lib
    from faces import template as template_lib
    from testing import synthetic_faces

    # Three faces whose largest is not the most confident one (tests/faces/photo_test.py).
    crowd = synthetic_photos(1, 42, faces_per_photo=(3, 3))[0]
    single = synthetic_photos(1, 2, faces_per_photo=(1, 1), face_sizes=(120, 160))[0]
    src = tmp_path / "photos"
    labelled = synthetic_faces.labelled_name
    inputs = {labelled(crowd, 0, "png"): photo_tools.encode(crowd.image, "PNG"),
              labelled(single, 1): photo_tools.encode(single.image, quality=95),
              "30_1_0_20170101000000001.png": photo_tools.encode(photo_tools.plain(), "PNG")}
    copy = labelled(crowd, 9, "png")  # the crowd photo re-encoded: same pixels
    for name, data in inputs.items():
        tools.write(str(src), name, data)
    tools.write(str(src), copy, photo_tools.encode(crowd.image, "PNG", compress_level=1))
    size = 64
    records_by_select = {}
    for select in ("largest", "score"):
        out = tmp_path / select
        rc, report = tools.run_build(str(src), str(out), "--align_faces", f"--image_size={size}",
                                     f"--face_select={select}")
        assert rc == 0
        assert report["counts"]["written"] == 2
        assert tools.skipped_by_source(report) == {"30_1_0_20170101000000001.png": "no_face",
                                                   copy: "duplicate"}
        alignment = report["metadata"]["face_alignment"]
        assert alignment["select"] == select
        assert alignment["template_sha256"] == template_lib.fingerprint(
            template_lib.load().points)
        records_by_select[select] = {
            e[schema.IMAGE_SOURCE_ID].decode(): e
            for split in schema.SPLITS if records.has_split(str(out), split)
            for e in records.iter_examples(str(out), split)}
    for select, written in records_by_select.items():
        faces = photo_lib.PhotoFaces(size, select=select)
        for name, example in written.items():
            data = inputs[name]
            pixels = preprocessing.decode_rgb(data).numpy()
            assert example[schema.IMAGE_SHA256].decode() == splits.pixel_hash(pixels)
            image = tf.io.decode_jpeg(example[schema.IMAGE_ENCODED]).numpy()
            assert image.shape == (size, size, 3)
            # The same crop as faces.photo makes it, through the records' JPEG encoding.
            want = tf.io.decode_jpeg(tf.io.encode_jpeg(faces.best(data).crop, quality=95))
            assert np.abs(image.astype(int) - want.numpy()).mean() < 0.5, (select, name)
    crowd_name = synthetic_faces.labelled_name(crowd, 0, "png")
    chosen = [tf.io.decode_jpeg(records_by_select[s][crowd_name][schema.IMAGE_ENCODED]).numpy()
              for s in ("largest", "score")]
    assert np.abs(chosen[0].astype(int) - chosen[1]).mean() > 20  # two different faces


def test_without_align_faces_the_report_has_no_face_alignment(tmp_path, tools):
    src = tmp_path / "faces"
    _faces(src, tools, n=3)
    rc, report = tools.run_build(str(src), str(tmp_path / "out"))
    assert rc == 0 and "face_alignment" not in report["metadata"]
    assert report["counts"]["written"] == 3


def test_split_fractions_and_its_old_spelling_parse_alike(capsys):
    """--split names one split in every other command; the records job spells its fractions
    --split_fractions and still takes --split, with a warning naming the new spelling."""
    parser = build_records._parser()
    new, _ = parser.parse_known_args(["--input=x", "--output_dir=y",
                                      "--split_fractions=0.5,0.25,0.25"])
    old, _ = parser.parse_known_args(["--input=x", "--output_dir=y", "--split=0.5,0.25,0.25"])
    assert new.split == old.split == (0.5, 0.25, 0.25)
    assert build_records.main(["--input=/nonexistent/x", "--output_dir=y",
                               "--split=0.5,0.5,0"]) != 0
    assert "--split is deprecated, use --split_fractions" in capsys.readouterr().err
