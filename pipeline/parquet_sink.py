"""The annotations directory: Parquet files of one row per face, and `report.json`.

Layout (`pipeline.annotate` writes it; `pipeline.publish` switches it into place whole):

    faces.parquet/part-SSSSSSSS-CCCCC.parquet   rows, in a fixed order (see `shard_of`)
    report.json        inputs = annotated + skipped (with reasons), faces per photo, the
                       model, throughput

The rows are a directory of Parquet files of its own (a dataset, as Spark writes them),
so `pandas.read_parquet("<output_dir>/faces.parquet")` and DuckDB's
`'<output_dir>/faces.parquet/*.parquet'` read it whole, report.json not in the way.

Rows (`SCHEMA`): one per face found, and one per photo without a face (`face_index` null),
so every annotated photo is in the table. Columns are flat scalars (and one list, the
landmarks) so that pandas, DuckDB, Spark and BigQuery read them as they are. The model
(backend, version, signature, sha256 of saved_model.pb) is in every file's key-value
metadata under `agegender` and in report.json.

Why Parquet through pyarrow: Beam already depends on pyarrow (its Parquet IO), so it adds
no dependency; a typed, compressed, columnar file every data tool reads. Why not
`beam.io.WriteToParquet`: like every Beam file sink it decides neither which file a row
lands in nor its order there (and on the DaskRunner leaves temporary directories behind,
see `pipeline.portable`); here a shard is a fixed range of inputs whose rows are sorted,
written whole to a temporary name and renamed, so a rerun writes the same rows in the same
order, on any runner.

Why the rows are written where they are made (`OpenFiles`, in the step that reads and
answers the photos) and not gathered per file by a `GroupByKey`: the in-process runner
buffers a GroupByKey's whole input before its consumer starts, so every row of the job
would be held in one process at once. Each reader sends all
photos of a file and marks its last (`pipeline.photo_batches`), so the file is complete
where its rows are: a worker holds only the rows of the files it is answering, and only
the files' small entries (counts, faces per photo) meet for the report.
"""
import collections
import io
import json
import os
import uuid

import apache_beam as beam

from agegender import schema

NAMESPACE = "annotate"
TMP_DIR = ".tmp-annotate"
DATASET_DIR = "faces.parquet"
METADATA_KEY = b"agegender"
REPORT_FILE = schema.REPORT_FILE
EMPTY_FILE = "part-empty.parquet"  # written when no photo was annotated: readers get columns
DEFAULT_PHOTOS_PER_FILE = 10_000



def owns(name):
    """Whether a name in an annotations directory is one the job writes (publish)."""
    return name in (REPORT_FILE, TMP_DIR, DATASET_DIR)


METADATA_FILES = (REPORT_FILE,)


def _schema():
    import pyarrow as pa

    f32 = pa.float32()
    return pa.schema([
        ("path", pa.string()),        # the photo, relative to --input ("<archive>/<member>")
        ("archive", pa.string()),     # the archive it was read from, else null
        ("width", pa.int32()), ("height", pa.int32()),  # decoded pixels (its header)
        ("num_faces", pa.int16()),    # faces found in the photo
        ("face_index", pa.int16()),   # 0.. in the model's order (score); null: no face
        ("box_x1", f32), ("box_y1", f32), ("box_x2", f32), ("box_y2", f32),  # photo pixels
        ("landmarks", pa.list_(f32)),  # x, y of eyes, nose, mouth corners (10 numbers)
        ("face_score", f32),
        ("age", f32), ("age_std", f32),
        ("age_interval_50_low", f32), ("age_interval_50_high", f32),
        ("age_interval_80_low", f32), ("age_interval_80_high", f32),
        ("gender", pa.string()),      # "male" | "female"; null: no gender head
        ("gender_probability", f32),  # of `gender`, calibrated
    ])


COLUMNS = ("path", "archive", "width", "height", "num_faces", "face_index", "box_x1",
           "box_y1", "box_x2", "box_y2", "landmarks", "face_score", "age", "age_std",
           "age_interval_50_low", "age_interval_50_high", "age_interval_80_low",
           "age_interval_80_high", "gender", "gender_probability")


def _pair(value):
    return (None, None) if value is None else (value[0], value[1])


def photo_rows(path, archive, width, height, faces):
    """One photo's rows (tuples in `COLUMNS` order): one per `agegender.Face`, or one with
    face_index null when there is none."""
    if not faces:
        return [(path, archive, width, height, 0, None) + (None,) * (len(COLUMNS) - 6)]
    rows = []
    for j, face in enumerate(faces):
        box = face.box if face.box is not None else (None,) * 4
        landmarks = None if face.landmarks is None else [c for p in face.landmarks for c in p]
        rows.append((path, archive, width, height, len(faces), j, *box, landmarks, face.score,
                     face.age, face.age_std, *_pair(face.age_interval_50),
                     *_pair(face.age_interval_80), face.gender, face.gender_probability))
    return rows


def shard_of(ordinal, member, photos_per_file):
    """The file a photo's rows go to: `(start, chunk)`.

    Plain files: the listing (sorted by path) cut into runs of `photos_per_file`: chunk 0
    of the run starting at `start`. An archive's members (archive at listing position
    `ordinal`): chunks 1, 2... of `photos_per_file` members each, in archive order. A file
    is named after its key (`file_name`), its rows sorted by (listing position, member,
    face): the same inputs always give the same files and rows, whatever the runner.
    """
    if member is None:
        return ordinal - ordinal % photos_per_file, 0
    return ordinal, 1 + member // photos_per_file


def file_name(shard):
    """The file of `shard` (`shard_of`), relative to the output directory."""
    start, chunk = shard
    return f"{DATASET_DIR}/part-{start:08d}-{chunk:05d}.parquet"


def table(rows, metadata):
    """pyarrow Table of `rows` (tuples in COLUMNS order) with the job's file metadata."""
    import pyarrow as pa

    columns = list(zip(*rows)) if rows else [[] for _ in COLUMNS]
    schema_ = _schema().with_metadata({METADATA_KEY: json.dumps(metadata, sort_keys=True)})
    return pa.Table.from_arrays([pa.array(list(c), type=schema_.field(n).type)
                                 for n, c in zip(COLUMNS, columns)], schema=schema_)


def write_table(output_dir, name, tbl):
    """Writes a Parquet file `name` (`file_name`) into `output_dir` on any filesystem TF
    knows: whole, to a unique temporary name, then renamed (a retried bundle rewrites the
    same bytes). Returns its size."""
    import pyarrow.parquet as pq
    import tensorflow as tf

    buffer = io.BytesIO()
    pq.write_table(tbl, buffer)
    tmp_dir, final = f"{output_dir}/{TMP_DIR}", f"{output_dir}/{name}"
    tf.io.gfile.makedirs(tmp_dir)
    tf.io.gfile.makedirs(os.path.dirname(final))
    tmp = f"{tmp_dir}/{os.path.basename(name)}.{uuid.uuid4().hex}"
    with tf.io.gfile.GFile(tmp, "wb") as f:
        f.write(buffer.getvalue())
    tf.io.gfile.rename(tmp, final, overwrite=True)
    return len(buffer.getvalue())


def read_metadata(path):
    """The `agegender` metadata dict of one Parquet file the job wrote."""
    import pyarrow.parquet as pq

    return json.loads(pq.read_schema(path).metadata[METADATA_KEY])


class OpenFiles:
    """The rows of the files being answered in this thread, each written as soon as its last
    photo is in (`add`); only the files still open are held.

    A photo's rows are kept by its position, so a photo seen twice (a retried bundle) is
    counted once; a file whose photo count does not match what its reader said is a runner
    fault and fails the job.
    """

    def __init__(self, output_dir, metadata):
        self._output_dir = str(output_dir).rstrip("/")
        self._metadata = metadata
        self._open = {}  # shard -> {position: rows, or None for a photo not annotated}

    def add(self, shard, position, rows, closes=0):
        """One photo of file `shard`: its rows (`photo_rows`), or None when the model could
        not answer it (a skip: counted, no rows). `closes` > 0: the photo is the file's last
        and the file holds `closes` photos. Returns the file's entry when it was written
        (no file when none of its photos was annotated), else None."""
        photos = self._open.setdefault(shard, {})
        photos[position] = rows
        if not closes:
            return None
        del self._open[shard]
        if len(photos) != closes:
            raise RuntimeError(f"{file_name(shard)}: {len(photos)} photo(s) answered, its "
                               f"reader sent {closes}")
        annotated = [photos[p] for p in sorted(photos) if photos[p] is not None]
        if not annotated:
            return None
        return self.write(shard, annotated)

    def write(self, shard, annotated):
        """`annotated`: each photo's rows, in the file's order -> the file, and its entry."""
        rows = [row for photo_rows_ in annotated for row in photo_rows_]
        name = file_name(shard)
        size = write_table(self._output_dir, name, table(rows, self._metadata))
        faces = collections.Counter(str(photo_rows_[0][4]) for photo_rows_ in annotated)
        return {"file": name, "photos": len(annotated), "rows": len(rows), "bytes": size,
                "faces_per_photo": dict(faces)}

    @property
    def open_files(self):
        return len(self._open)


def count_skip(skip):
    """One Beam counter per skip reason (none on the DaskRunner: report.json has them)."""
    beam.metrics.Metrics.counter(NAMESPACE, f"skipped_{skip.reason}").inc()
    return skip


def _histogram(files):
    total = collections.Counter()
    for f in files:
        total.update(f["faces_per_photo"])
    return {k: total[k] for k in sorted(total, key=int)}


def make_report(*, metadata, num_inputs, files, skips):
    """The report dict (pure, deterministic for the same inputs)."""
    files = sorted(files, key=lambda f: f["file"])
    skips = sorted(skips, key=lambda s: (s.source_id, s.reason, s.detail))
    annotated = sum(f["photos"] for f in files)
    histogram = _histogram(files)
    return {
        "metadata": metadata,
        "counts": {
            "inputs": num_inputs, "annotated": annotated, "skipped": len(skips),
            "rows": sum(f["rows"] for f in files),
            "faces": sum(int(k) * n for k, n in histogram.items()),
            "skipped_by_reason": dict(sorted(collections.Counter(s.reason for s in skips).items())),
            "faces_per_photo": histogram,
        },
        "files": [{k: f[k] for k in ("file", "photos", "rows", "bytes")} for f in files],
        "skipped": [s._asdict() for s in skips],
    }


def write_report(output_dir, report):
    import tensorflow as tf

    with tf.io.gfile.GFile(f"{output_dir}/{REPORT_FILE}", "w") as f:
        f.write(json.dumps(report, indent=1) + "\n")


def read_report(output_dir):
    import tensorflow as tf

    with tf.io.gfile.GFile(f"{output_dir}/{REPORT_FILE}") as f:
        return json.load(f)


def finalize(entries, *, output_dir, metadata, after=None):
    """After every file is written: checks inputs = annotated + skipped, writes an empty
    file when there are no rows, `after(report)` (the labels template of --faces_dir), then
    report.json. Returns the report. `entries`: ("file" | "skip" | "inputs", value)."""
    import tensorflow as tf

    output_dir = str(output_dir).rstrip("/")
    files = [value for tag, value in entries if tag == "file"]
    skips = [value for tag, value in entries if tag == "skip"]
    num_inputs = sum(value for tag, value in entries if tag == "inputs")
    report = make_report(metadata=metadata, num_inputs=num_inputs, files=files, skips=skips)
    counts = report["counts"]
    lost = counts["inputs"] - counts["annotated"] - counts["skipped"]
    if lost:  # every step emits or skips each photo: a runner fault; fail, loudly
        counts["unaccounted"] = lost
        write_report(output_dir, report)
        raise RuntimeError(
            f"{lost} input(s) neither annotated nor skipped (inputs {counts['inputs']}, "
            f"annotated {counts['annotated']}, skipped {counts['skipped']}); see "
            f"{output_dir}/{REPORT_FILE}")
    if not files:
        write_table(output_dir, f"{DATASET_DIR}/{EMPTY_FILE}", table([], metadata))
    tmp_dir = f"{output_dir}/{TMP_DIR}"
    if tf.io.gfile.exists(tmp_dir):
        tf.io.gfile.rmtree(tmp_dir)
    if after is not None:
        after(report)
    write_report(output_dir, report)
    return report
