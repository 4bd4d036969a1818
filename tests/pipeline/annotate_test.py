"""pipeline.annotate on the DirectRunner: rows, report, metadata, hostile inputs, --faces_dir,
--crops, and the pieces (handler, batches, shards, names)."""
import dataclasses
import hashlib
import io
import json
import os
import tarfile
import zipfile

import numpy as np
import pytest
from apache_beam import pvalue as beam_pvalue

from agegender import image_sources as sources
from pipeline import annotate, face_crops, inference_handler, parquet_sink, photo_batches

TOL = 1e-4  # the model's answers depend on the batch they were computed in (~1e-5)


@pytest.fixture(scope="module")
def model_base(tiny_export):
    """A tiny classification + gender model exported as version 1 (predict_photo included)."""
    return tiny_export("clf_gender")


@pytest.fixture(scope="module")
def photos(synthetic_photos, photo_tools):
    """{name: JPEG bytes}: photos with 1 to 3 faces, and one without a face."""
    made = synthetic_photos(5, 11, faces_per_photo=(1, 3), face_sizes=(60, 140))
    out = {f"p{i}.jpg": photo_tools.encode(p.image) for i, p in enumerate(made)}
    out["sub/plain.png"] = photo_tools.encode(photo_tools.plain(), "PNG")
    return out


def _run(input_spec, out, *flags, model):
    return annotate.main([f"--model={model}", f"--input={input_spec}", f"--output_dir={out}",
                          "--direct_running_mode=in_memory", "--direct_num_workers=1", *flags])


def _rows(out):
    import pandas as pd

    return pd.read_parquet(os.path.join(out, parquet_sink.DATASET_DIR))


def _report(out):
    with open(os.path.join(out, parquet_sink.REPORT_FILE)) as f:
        return json.load(f)


def _skips(report):
    return {s["source_id"]: s["reason"] for s in report["skipped"]}


def _write_all(directory, files):
    for name, data in files.items():
        path = os.path.join(directory, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def test_every_face_is_a_row_with_the_models_answer(model_base, photos, tmp_path):
    from agegender import FaceAnalyzer

    src, out = tmp_path / "photos", str(tmp_path / "out")
    _write_all(str(src), photos)
    assert _run(src, out, "--batch_size=2", "--photos_per_file=4", "--min_shards=1",
                model=model_base) == 0

    rows = _rows(out)
    analyzer = FaceAnalyzer.load(model_base)
    paths = sorted(photos)  # the listing's order
    assert list(dict.fromkeys(rows["path"])) == paths
    for path in paths:
        want = analyzer.analyze(photos[path])
        got = rows[rows["path"] == path]
        if not want:  # one row, face_index null: every photo is accounted for
            assert len(got) == 1 and got["face_index"].isna().all() and got["num_faces"].iloc[0] == 0
            assert got["age"].isna().all()
            continue
        assert list(got["face_index"]) == list(range(len(want)))
        assert (got["num_faces"] == len(want)).all()
        for (_, row), face in zip(got.iterrows(), want):
            np.testing.assert_allclose([row.box_x1, row.box_y1, row.box_x2, row.box_y2],
                                       face.box, atol=TOL)
            np.testing.assert_allclose(row.landmarks, np.ravel(face.landmarks), atol=TOL)
            np.testing.assert_allclose(
                [row.face_score, row.age, row.age_std, row.age_interval_80_low,
                 row.age_interval_80_high, row.gender_probability],
                [face.score, face.age, face.age_std, *face.age_interval_80,
                 face.gender_probability], atol=TOL)
            assert row.gender == face.gender
    sizes = {p: (w, h) for p, w, h in zip(rows["path"], rows["width"], rows["height"])}
    assert sizes["sub/plain.png"] == (320, 240)

    report = _report(out)
    counts = report["counts"]
    assert counts["inputs"] == counts["annotated"] == len(photos) and counts["skipped"] == 0
    assert counts["rows"] == len(rows)
    assert counts["faces"] == int(rows["face_index"].notna().sum())
    per_photo = rows.groupby("path")["num_faces"].first().value_counts()
    assert counts["faces_per_photo"] == {str(k): int(v) for k, v in sorted(per_photo.items())}
    assert report["throughput"]["photos_per_second"] > 0
    # 6 photos, 4 per file (at least 1 file): two files, named by the listing position they
    # start at.
    assert [f["file"] for f in report["files"]] == [
        "faces.parquet/part-00000000-00000.parquet", "faces.parquet/part-00000004-00000.parquet"]

    # The model in every file and in the report: version, signature, sha256 of its graph.
    with open(os.path.join(model_base, "1", "saved_model.pb"), "rb") as f:
        sha256 = hashlib.sha256(f.read()).hexdigest()
    for entry in report["files"]:
        meta = parquet_sink.read_metadata(os.path.join(out, entry["file"]))
        assert meta == report["metadata"]
    model = report["metadata"]["model"]
    assert (model["version"], model["saved_model_sha256"]) == (1, sha256)
    assert report["metadata"]["signature"] == "predict_photo"


def test_duckdb_reads_the_rows_as_they_are(model_base, photos, tmp_path):
    duckdb = pytest.importorskip("duckdb")
    src, out = tmp_path / "photos", str(tmp_path / "out")
    _write_all(str(src), {k: v for k, v in photos.items() if k in ("p0.jpg", "sub/plain.png")})
    assert _run(src, out, model=model_base) == 0
    pattern = os.path.join(out, parquet_sink.DATASET_DIR, "*.parquet")
    got = duckdb.sql(f"SELECT path, count(*) AS n, count(face_index) AS faces, avg(age) AS age "
                     f"FROM '{pattern}' GROUP BY path ORDER BY path").fetchall()
    rows = _rows(out)
    assert [(p, n, f) for p, n, f, _ in got] == [
        ("p0.jpg", int((rows.path == "p0.jpg").sum()), int((rows.path == "p0.jpg").sum())),
        ("sub/plain.png", 1, 0)]
    assert got[1][3] is None and got[0][3] == pytest.approx(rows[rows.path == "p0.jpg"].age.mean())


def test_hostile_inputs_are_skips_with_the_records_jobs_reasons(model_base, photos, tmp_path,
                                                                png_bomb):
    src = tmp_path / "in"
    good = {"a.jpg": photos["p0.jpg"], "b.png": photos["sub/plain.png"]}
    _write_all(str(src), good)
    whole = photos["p1.jpg"]
    _write_all(str(src), {
        "empty.jpg": b"",
        "truncated.jpg": whole[:len(whole) // 3],  # its header passes: the model refuses it
        "notes.txt": b"not a photo\n",
        "bomb.png": png_bomb,
    })
    os.symlink("/etc/passwd", src / "passwd.jpg")
    os.symlink("/dev/zero", src / "zero.jpg")
    os.mkfifo(src / "fifo.jpg")
    with open(os.path.join(os.fsencode(str(src)), b"bad\xffname.jpg"), "wb") as f:
        f.write(photos["p2.jpg"])
    with tarfile.open(src / "album.tar.gz", "w:gz") as tar:
        for name, data in (("in/tar.jpg", photos["p3.jpg"]), ("../escape.jpg", photos["p3.jpg"]),
                           ("bomb.png", png_bomb)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with zipfile.ZipFile(src / "album.zip", "w") as zf:
        zf.writestr("zip.jpg", photos["p4.jpg"])
    _write_all(str(src), {"broken.zip": b"PK\x03\x04 not really a zip"})

    out = str(tmp_path / "out")
    assert _run(src, out, "--batch_size=4", model=model_base) == 0
    report = _report(out)
    assert _skips(report) == {
        "empty.jpg": sources.EMPTY_FILE, "truncated.jpg": sources.UNDECODABLE,
        "notes.txt": sources.UNDECODABLE, "bomb.png": sources.IMAGE_TOO_LARGE,
        "passwd.jpg": sources.NOT_A_REGULAR_FILE, "zero.jpg": sources.NOT_A_REGULAR_FILE,
        "fifo.jpg": sources.NOT_A_REGULAR_FILE, "bad\\xffname.jpg": sources.BAD_FILE_NAME,
        "album.tar.gz/../escape.jpg": sources.UNSAFE_ARCHIVE_PATH,
        "album.tar.gz/bomb.png": sources.IMAGE_TOO_LARGE,
        "broken.zip": sources.UNREADABLE_ARCHIVE}
    counts = report["counts"]
    assert counts["inputs"] == counts["annotated"] + counts["skipped"] == 11 + 4
    rows = _rows(out)
    assert set(rows["path"]) == {"a.jpg", "b.png", "album.tar.gz/in/tar.jpg",
                                 "album.zip/zip.jpg"}
    assert set(rows.loc[rows.archive.notna(), "archive"]) == {"album.tar.gz", "album.zip"}


@pytest.mark.slow
def test_same_rows_on_every_run_whatever_the_workers(model_base, photos, tmp_path):
    """Rows and their order depend on the inputs and the model only."""
    src = tmp_path / "in"
    _write_all(str(src), {k: v for k, v in photos.items() if k != "p4.jpg"})
    members = ("p4.jpg", "p0.jpg", "p1.jpg")
    with tarfile.open(src / "more.tar", "w") as tar:
        for i, name in enumerate(members):
            info = tarfile.TarInfo(f"m{i}.jpg")
            info.size = len(photos[name])
            tar.addfile(info, io.BytesIO(photos[name]))
    outputs = []
    for i, flags in enumerate((["--direct_num_workers=1"], ["--direct_num_workers=2"])):
        out = str(tmp_path / f"out{i}")
        rc = annotate.main([f"--model={model_base}", f"--input={src}", f"--output_dir={out}",
                            "--batch_size=2", "--photos_per_file=2",
                            "--direct_running_mode=in_memory", *flags])
        assert rc == 0
        data = os.path.join(out, parquet_sink.DATASET_DIR)
        outputs.append({n: open(os.path.join(data, n), "rb").read() for n in os.listdir(data)})
        report = _report(out)
        report.pop("throughput")
        outputs[-1]["report"] = report
    assert outputs[0] == outputs[1]
    # report; 6 listed inputs (5 files, the tar), at least 4 files (--min_shards): runs of
    # min(2, 6 // 4) = 1, the 5 files in 5; the tar's 3 members in chunks of 2: 2
    assert len(outputs[0]) == 1 + 5 + 2


@pytest.mark.slow
def test_faces_dir_feeds_the_records_job(model_base, photos, tmp_path):
    from pipeline import build_records

    src, out, faces = tmp_path / "in", str(tmp_path / "out"), str(tmp_path / "faces")
    _write_all(str(src), photos)
    assert _run(src, out, f"--faces_dir={faces}", model=model_base) == 0
    rows = _rows(out)
    found = rows[rows.face_index.notna()]
    crops = sorted(n for n in os.listdir(faces) if n.endswith(".jpg"))
    assert crops == sorted(face_crops.crop_name(p, int(j))
                           for p, j in zip(found.path, found.face_index))
    from PIL import Image
    assert Image.open(os.path.join(faces, crops[0])).size == (160, 160)
    with open(os.path.join(faces, face_crops.LABELS_FILE)) as f:
        lines = f.read().splitlines()
    assert lines[0] == "file,age,gender" and lines[1].startswith("#")
    assert len(lines) == 2 + len(found)
    # A person corrects one label; the folder becomes records with those labels.
    first = lines[2].split(",")
    lines[2] = f"{first[0]},7,1"
    with open(os.path.join(faces, face_crops.LABELS_FILE), "w") as f:
        f.write("\n".join(lines) + "\n")
    records = str(tmp_path / "records")
    assert build_records.main([f"--input={faces}/*.jpg", f"--output_dir={records}",
                               f"--labels_csv={faces}/{face_crops.LABELS_FILE}",
                               "--direct_running_mode=in_memory",
                               "--direct_num_workers=1"]) == 0
    with open(os.path.join(records, "report.json")) as f:
        counts = json.load(f)["counts"]
    assert counts["inputs"] == len(found)
    assert counts["written"] + counts["skipped_by_reason"].get("duplicate", 0) == len(found)
    assert counts["skipped_by_reason"].keys() <= {"duplicate"}


def test_crops_are_answered_by_serving_default(model_base, tmp_path):
    from agegender import FaceAnalyzer
    from export import export_model

    crops = {f"c{i}.jpg": export_model.synthetic_jpeg(size=40 + 10 * i, seed=i) for i in range(3)}
    src, out = tmp_path / "crops", str(tmp_path / "out")
    _write_all(str(src), crops)
    assert _run(src, out, "--crops", model=model_base) == 0
    rows = _rows(out)
    assert list(rows.path) == sorted(crops) and (rows.face_index == 0).all()
    assert rows.box_x1.isna().all() and rows.landmarks.isna().all()
    want = FaceAnalyzer.load(model_base).estimate_crops([crops[p] for p in sorted(crops)])
    np.testing.assert_allclose(rows.age, [f.age for f in want], atol=TOL)
    assert _report(out)["metadata"]["signature"] == "serving_default"


def test_bad_flags_and_models_are_one_line_errors(model_base, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jpg").write_bytes(b"x")
    out = str(tmp_path / "out")
    for flags, message in (
            (["--max_image_pixels=0"], "expected a pixel count > 0"),
            ([f"--model={model_base}", "--crops", f"--faces_dir={tmp_path}/f"], "--faces_dir"),
            ([f"--model={tmp_path}/nothing"], "annotate: error:"),
            ([f"--model={model_base}", f"--faces_dir={out}"], "different directories")):
        argv = [f"--input={src}", f"--output_dir={out}", *flags]
        if not any(f.startswith("--model") for f in flags):
            argv.append(f"--model={model_base}")
        with pytest.raises(SystemExit) if "pixel count" in message else _nothing():
            rc = annotate.main(argv)
            assert rc == 2
        err = capsys.readouterr().err
        assert message in err, err
        assert len([line for line in err.splitlines() if "error" in line]) == 1
        assert not os.path.exists(out)
    (tmp_path / "records").mkdir()
    (tmp_path / "records" / "mine.txt").write_text("keep me")
    assert annotate.main([f"--model={model_base}", f"--input={src}",
                          f"--output_dir={tmp_path / 'records'}"]) == 2
    assert "holds files an annotations directory does not have" in capsys.readouterr().err
    assert (tmp_path / "records" / "mine.txt").read_text() == "keep me"


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Model:
    """A stand-in analyzer: refuses b"bad" alone or in any batch; b"down" fails otherwise."""

    def __init__(self):
        self.calls = []

    def analyze_batch(self, photos):
        from agegender.errors import ImageError

        self.calls.append(list(photos))
        if b"bad" in photos:
            raise ImageError(sources.UNDECODABLE, "cannot decode the photo")
        if b"down" in photos:
            raise ConnectionError("the server is down")
        return [[f"faces of {p.decode()}"] for p in photos]


def test_a_refused_batch_is_answered_one_photo_at_a_time_in_order():
    handler = inference_handler.AnalyzerHandler("unused")
    model = _Model()
    got = handler.run_inference([b"a", b"bad", b"c", b"down"], model)
    assert [r.example for r in got] == [b"a", b"bad", b"c", b"down"]
    assert got[0].inference == ["faces of a"] and got[2].inference == ["faces of c"]
    assert got[1].inference == inference_handler.Refusal(
        sources.UNDECODABLE, "cannot decode the photo")
    assert got[3].inference.reason == inference_handler.INFERENCE_FAILED
    assert "ConnectionError" in got[3].inference.detail and "down" in got[3].inference.detail
    assert model.calls[1:] == [[b"a"], [b"bad"], [b"c"], [b"down"]]
    ok = handler.run_inference([b"a", b"c"], model)  # an answered batch: one call
    assert [r.inference for r in ok] == [["faces of a"], ["faces of c"]]
    assert model.calls[-1] == [b"a", b"c"]


def _key(shard, ordinal, closes=0):
    return (shard, (ordinal, -1), f"f{ordinal}.jpg", None, 10, 10, closes)


def test_units_are_whole_files_of_the_listing_or_one_archive():
    items = [sources.InputFile(f"/x/f{i}.jpg", f"f{i}.jpg", 1, False) for i in range(7)]
    items[3] = sources.InputFile("/x/a.tar", "a.tar", 1, True)
    units = photo_batches.units(items, 3)
    assert sorted([o for o, _ in u] for u in units) == [[0, 1, 2], [3], [4, 5], [6]]
    assert photo_batches.units([], 3) == []


def test_batches_never_span_two_files_and_each_files_last_photo_says_its_count():
    batches = photo_batches.FileBatches(max_size=2, max_bytes=100)
    got = []
    for ordinal in range(5):  # files of 3: photos 0-2, then 3-4
        got += batches.add((_key((ordinal - ordinal % 3, 0), ordinal), b"x"))
    got += batches.rest()
    assert [[(k[1][0], k[6]) for k, _ in b] for b in got] == [
        [(0, 0), (1, 0)], [(2, 3)], [(3, 0), (4, 2)]]
    assert batches.rest() == []


def test_a_file_is_written_when_its_last_photo_is_in_and_only_open_files_are_held(tmp_path):
    files = parquet_sink.OpenFiles(str(tmp_path), {"m": 1})
    rows = {i: parquet_sink.photo_rows(f"f{i}.jpg", None, 10, 10, []) for i in range(4)}
    # answered out of order, one refused (None), one seen twice (a retried bundle)
    assert files.add((0, 0), (2, -1), rows[2]) is None
    assert files.add((0, 0), (0, -1), rows[0]) is None
    assert files.add((0, 0), (0, -1), rows[0]) is None
    assert files.add((3, 0), (3, -1), rows[3]) is None
    assert files.open_files == 2
    entry = files.add((0, 0), (1, -1), None, closes=3)
    assert entry == {"file": parquet_sink.file_name((0, 0)), "photos": 2, "rows": 2,
                     "bytes": entry["bytes"], "faces_per_photo": {"0": 2}}
    assert files.open_files == 1
    import pyarrow.parquet as pq
    assert pq.read_table(tmp_path / entry["file"]).column("path").to_pylist() == [
        "f0.jpg", "f2.jpg"]
    with pytest.raises(RuntimeError, match="1 photo\\(s\\) answered, its reader sent 2"):
        files.add((3, 0), (3, -1), rows[3], closes=2)  # a photo lost on the way: fail
    assert files.add((6, 0), (6, -1), None, closes=1) is None  # every photo refused: no file
    assert not os.path.exists(tmp_path / parquet_sink.file_name((6, 0)))


def test_the_units_reach_the_workers_through_a_file_not_the_graph(tmp_path):
    skip = sources.Skip("bad\\xffname.jpg", sources.BAD_FILE_NAME, "not UTF-8")
    items = [sources.InputFile("/x/a.tar", "a.tar", 5, True),
             sources.InputFile("/x/été 1.jpg", "été 1.jpg", 7, False),
             sources.InputFile("bad\\xffname.jpg", "bad\\xffname.jpg", 0, False, skip),
             sources.InputFile("/x/z.jpg", "z.jpg", 9, False)]
    refs = photo_batches.write_units(items, 2, str(tmp_path / "tmp"))
    assert len(refs) == 3 and all(len(ref) == 3 for ref in refs)  # (file, offset, length)
    assert sorted(photo_batches.read_unit(ref) for ref in reversed(refs)) == sorted(
        photo_batches.units(items, 2))
    assert photo_batches.read_unit(refs[1])[0][1].skip == skip  # still a Skip


def test_no_step_gathers_the_rows(tmp_path):
    """Every GroupByKey and Flatten of the graph is of small things (report entries, skips,
    input counts): the rows are written where they are made."""
    import apache_beam as beam

    options = annotate.AnnotateOptions(output_dir=str(tmp_path), model="unused")
    p = beam.Pipeline()
    items = [sources.InputFile("/x/a.tar", "a.tar", 1, True),
             sources.InputFile("/x/f.jpg", "f.jpg", 1, False)]
    annotate.build_pipeline(p, items, options, {})
    found = []

    class Visitor(beam.pipeline.PipelineVisitor):
        def visit_transform(self, node):
            if isinstance(node.transform, (beam.GroupByKey, beam.Flatten)):
                found.append(node.full_label)

        def enter_composite_transform(self, node):
            self.visit_transform(node)

    p.visit(Visitor())
    allowed = ("ListInputs/", "SpreadInputs/", "AllSkips", "AllEntries", "ReportEntries/",
               "SumInputs/")
    assert found and all(label.startswith(allowed) for label in found), found


def test_batches_are_bounded_by_count_and_bytes():
    batches = photo_batches.PhotoBatches(max_size=3, max_bytes=100)
    got = []
    for i, size in enumerate([10, 10, 10, 10, 95, 200, 5]):
        got += batches.add((i, b"x" * size))
    got += batches.rest()
    assert [[i for i, _ in b] for b in got] == [[0, 1, 2], [3], [4], [5], [6]]


def test_files_are_fixed_ranges_of_the_listing():
    assert parquet_sink.shard_of(0, None, 10) == parquet_sink.shard_of(9, None, 10) == (0, 0)
    assert parquet_sink.shard_of(10, None, 10) == (10, 0)
    assert parquet_sink.shard_of(12, 0, 10) == (12, 1) and parquet_sink.shard_of(12, 25, 10) == (12, 3)
    assert parquet_sink.file_name((10, 0)) == "faces.parquet/part-00000010-00000.parquet"
    assert parquet_sink.owns("faces.parquet") and not parquet_sink.owns("notes.txt")


def test_crop_names_are_unique_and_readable():
    names = {face_crops.crop_name(p, j) for p in ("a/b.jpg", "a_b.jpg", "x.tar/a/b.jpg")
             for j in (0, 1)}
    assert len(names) == 6
    assert face_crops.crop_name("holidays/IMG 0001.JPG", 3).startswith("IMG_0001-")
    assert all(face_crops.owns(n) for n in names) and face_crops.owns("labels.csv")


@pytest.mark.slow
def test_an_archive_expanding_to_hundreds_of_megabytes_is_annotated_in_bounded_memory(
        model_base, photos, tmp_path, tools):
    """12 members of 40 MB (a photo padded with zeros, under the per-file cap) from a few MB
    of tar.gz, in a child process under RLIMIT_DATA (heap and private mappings) of 3 GiB.
    Every member is answered where the archive is read, one batch at a time; holding all
    members between steps (a Flatten, or spreading them all to other workers) peaks at
    ~2.9 GB RSS and, under this limit, fails with a MemoryError (measured)."""
    import subprocess
    import sys

    path = str(tmp_path / "big.tar.gz")
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for i in range(12):
            data = photos["p0.jpg"] + bytes(40 * 2 ** 20 - len(photos["p0.jpg"]))
            info = tarfile.TarInfo(f"m{i:02d}.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out = str(tmp_path / "out")
    limit = 3 << 30
    argv = [f"--model={model_base}", f"--input={path}", f"--output_dir={out}",
            "--direct_running_mode=in_memory", "--direct_num_workers=1"]
    script = (f"import resource, sys\n"
              f"resource.setrlimit(resource.RLIMIT_DATA, ({limit}, {limit}))\n"
              f"from pipeline import annotate\nsys.exit(annotate.main({argv!r}))\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=tools.REPO,
                            env={**os.environ, "PYTHONPATH": tools.REPO,
                                 "TF_NUM_INTRAOP_THREADS": "2", "TF_NUM_INTEROP_THREADS": "2"},
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    counts = _report(out)["counts"]
    assert counts["inputs"] == counts["annotated"] == 12


def test_a_small_listing_is_cut_into_at_least_min_shards_files():
    """Fewer plain files than --photos_per_file still make --min_shards units of work (one
    per worker), by the listing and the flags alone: the same files on every runner."""
    assert photo_batches.range_size(1000, 10_000, 4) == 250
    assert photo_batches.range_size(1001, 10_000, 4) == 251  # 4 files, not 250 x 4 + 1
    assert photo_batches.range_size(100_000, 10_000, 4) == 10_000  # big: --photos_per_file
    assert photo_batches.range_size(6, 4, 4) == 1 and photo_batches.range_size(3, 4, 4) == 1
    for n, per_file, min_shards in ((1000, 10_000, 4), (1001, 10_000, 4), (6, 4, 4), (5, 9, 4),
                                    (7, 2, 3), (3, 10, 4), (50_000, 10_000, 4), (97, 50, 8)):
        items = [sources.InputFile(f"/x/f{i}.jpg", f"f{i}.jpg", 1, False) for i in range(n)]
        sizes = [len(u) for u in photo_batches.units(
            items, photo_batches.range_size(n, per_file, min_shards))]
        assert len(sizes) >= min(n, min_shards) and max(sizes) <= per_file
        if n >= min_shards ** 2 and n <= per_file * min_shards:  # about equal files
            assert len(sizes) == min_shards and max(sizes) - min(sizes) <= min_shards


def _photo_file(directory, name, data):
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def test_plain_files_cross_to_run_inference_as_references_not_bytes(photos, tmp_path):
    """What the reading step hands to RunInference (on the DaskRunner: one list per partition,
    held whole) carries no plain file's bytes; an archive's members are still bytes."""
    src = tmp_path / "in"
    _write_all(str(src), {"a.jpg": photos["p0.jpg"], "b.png": photos["sub/plain.png"]})
    os.symlink("/etc/passwd", src / "passwd.jpg")
    with tarfile.open(src / "album.tar", "w") as tar:
        info = tarfile.TarInfo("m.jpg")
        info.size = len(photos["p1.jpg"])
        tar.addfile(info, io.BytesIO(photos["p1.jpg"]))
    items = sources.list_inputs(str(src))
    refs = photo_batches.write_units(items, 10, str(tmp_path / "tmp"))
    read = photo_batches.ReadPhotos(10, 16, 1 << 20)
    out = [o for ref in refs for o in read.process(ref)]
    sent = [photo for o in out if isinstance(o, list) for photo in o]
    skips = [o.value for o in out if isinstance(o, beam_pvalue.TaggedOutput)
             and o.tag == photo_batches.SKIPPED]
    assert [s.reason for s in skips] == [sources.NOT_A_REGULAR_FILE]
    plain = {key[2]: example for key, example in sent if key[3] is None}
    assert set(plain) == {"a.jpg", "b.png"}
    for key, example in sent:
        if key[3] is None:  # a plain file: a reference, no bytes, no size read yet
            assert example == (str(src / key[2]), key[2], len(photos[
                "p0.jpg" if key[2] == "a.jpg" else "sub/plain.png"]))
            assert not any(isinstance(part, bytes) for part in example)
            assert key[4] is key[5] is None
        else:
            assert example == photos["p1.jpg"] and key[2] == "album.tar/m.jpg"
    assert sum(o.value for o in out if isinstance(o, beam_pvalue.TaggedOutput)
               and o.tag == photo_batches.INPUTS) == 4


class _Counting:
    """A stand-in analyzer answering each photo with its byte count."""

    def __init__(self):
        self.calls = []

    def analyze_batch(self, photos):
        self.calls.append([len(p) for p in photos])
        return [[len(p)] for p in photos]


def test_the_handler_reads_and_checks_plain_files_right_before_answering(photos, tmp_path,
                                                                          png_bomb):
    directory = str(tmp_path)
    good = _photo_file(directory, "good.jpg", photos["p0.jpg"])
    empty = _photo_file(directory, "empty.jpg", b"")
    bomb = _photo_file(directory, "bomb.png", png_bomb)
    swapped = _photo_file(directory, "swapped.jpg", photos["p1.jpg"])
    refs = [(path, os.path.basename(path), os.path.getsize(path))
            for path in (good, empty, bomb, swapped)]
    refs.insert(2, photos["sub/plain.png"])  # an archive member: bytes, checked by its reader
    # Listed as a regular file, then replaced by a FIFO before its batch is answered.
    os.remove(swapped)
    os.mkfifo(swapped)
    handler = photo_batches.PhotoHandler("unused")
    model = _Counting()
    got = handler.run_inference(refs, model)
    assert model.calls == [[len(photos["p0.jpg"]), len(photos["sub/plain.png"])]]
    from PIL import Image
    size = Image.open(io.BytesIO(photos["p0.jpg"])).size
    assert got[0].example == (*size, None)  # read, its header's size, its bytes not kept
    assert got[0].inference == [len(photos["p0.jpg"])]
    assert got[2].example == photos["sub/plain.png"]
    assert [r.inference.reason for r in (got[1], got[3], got[4])] == [
        sources.EMPTY_FILE, sources.IMAGE_TOO_LARGE, sources.NOT_A_REGULAR_FILE]
    assert got[1].example == refs[1]  # a refused file keeps its reference
    # With the crops of --faces_dir, a photo with faces comes back with its bytes.
    kept = photo_batches.PhotoHandler("unused", keep_bytes=True).run_inference(refs[:1], model)
    assert kept[0].example == (*size, photos["p0.jpg"])
    # A link is refused unless followed, as the reader's rule says.
    link = os.path.join(directory, "link.jpg")
    os.symlink(good, link)
    ref = (link, "link.jpg", len(photos["p0.jpg"]))
    assert handler.run_inference([ref], model)[0].inference.reason == sources.NOT_A_REGULAR_FILE
    followed = photo_batches.PhotoHandler("unused", follow_symlinks=True)
    assert followed.run_inference([ref], model)[0].inference == [len(photos["p0.jpg"])]


def test_a_saved_models_info_is_read_without_building_it(model_base, tmp_path):
    """What the driver of a Dask job records (version, signatures, sha256 of
    saved_model.pb) is what the loaded model says, read from its files alone."""
    from agegender import FaceAnalyzer

    loaded = FaceAnalyzer.load(model_base).info
    assert inference_handler.saved_model_info(model_base) == loaded
    assert inference_handler.saved_model_info(os.path.join(model_base, "1")) == loaded
    assert loaded.saved_model_sha256 and "predict_photo" in loaded.signatures
    for not_one in (str(tmp_path / "nothing"), "grpc://localhost:8500", "m.tflite",
                    str(tmp_path)):
        assert inference_handler.saved_model_info(not_one) is None
    options = annotate.AnnotateOptions(output_dir=str(tmp_path / "out"), model=model_base)
    assert annotate.load_model(options, in_process=False)[0] == loaded
    with pytest.raises(ValueError, match="no serving_default"):
        annotate.load_model(dataclasses.replace(options, crops=True, model=str(
            _without_signature(model_base, tmp_path, "serving_default"))), in_process=False)


def _without_signature(model_base, tmp_path, name):
    """A copy of the model's version 1 whose saved_model.pb lacks signature `name`."""
    import shutil

    from tensorflow.python.saved_model import loader_impl

    copy = tmp_path / "copy" / "1"
    shutil.copytree(os.path.join(model_base, "1"), copy)
    proto = loader_impl.parse_saved_model(str(copy))
    del proto.meta_graphs[0].signature_def[name]
    (copy / "saved_model.pb").write_bytes(proto.SerializeToString())
    return copy
