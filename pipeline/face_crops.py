"""`--faces_dir`: every face the annotation found, as an aligned JPEG crop, plus a labels
template, so that a person can correct the labels and build records from the folder:

    python -m pipeline.build_records --input='FACES_DIR/*.jpg' \
        --labels_csv=FACES_DIR/labels.csv --output_dir=records/mine

- Crops are aligned on the model's own face template (the one its `predict_photo`
  aligns on, `assets.extra/face_alignment.json`; the shipped one otherwise) with the
  landmarks the model returned (`faces.alignment.align`, the served code's alignment),
  at the records' frame size (160): framed like the faces the model was trained on.
- Names: `<photo name>-<8 hex of sha256(path)>-face<NN>.jpg`, flat and unique per face
  (`labels.csv` and `--labels_csv` key rows by file basename), readable by a person.
- `labels.csv`: `file,age,gender` (`agegender.names.read_labels_csv`'s format; gender 0
  male, 1 female, empty: unknown) pre-filled with the model's answers (age rounded), in the
  annotations' row order, so correcting it means editing the wrong rows only.
"""
import csv
import hashlib
import io
import re

from pipeline import parquet_sink

LABELS_FILE = "labels.csv"
DEFAULT_CROP_SIZE = 160  # pipeline.build_records' default --image_size: no resize there
JPEG_QUALITY = 95
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_CROP = re.compile(r".+-[0-9a-f]{8}-face\d{2,}\.jpg")


def owns(name):
    """Whether a name in a faces directory is one the job writes (publish)."""
    return name in (LABELS_FILE, parquet_sink.TMP_DIR) or bool(_CROP.fullmatch(name))


METADATA_FILES = (LABELS_FILE,)


def crop_name(path, face_index):
    """The crop file name of face `face_index` of the photo at `path` (see module doc)."""
    base = path.rsplit("/", 1)[-1]
    stem = _UNSAFE.sub("_", base.rsplit(".", 1)[0] if "." in base[1:] else base)[:60] or "photo"
    digest = hashlib.sha256(path.encode("utf-8")).hexdigest()[:8]
    return f"{stem}-{digest}-face{face_index:02d}.jpg"


class CropWriter:
    """Photo bytes + its faces' landmarks -> aligned JPEG crops written to `faces_dir`.
    Set up once per process and thread (TF functions traced once)."""

    def __init__(self, faces_dir, template, max_pixels, size=DEFAULT_CROP_SIZE):
        self._dir = str(faces_dir).rstrip("/")
        self._template = [list(map(float, p)) for p in template]
        self._size = int(size)
        self._max_pixels = max_pixels
        self._crop = None

    def setup(self):
        import tensorflow as tf

        from agegender import preprocessing
        from faces import alignment

        template, size, max_pixels = self._template, self._size, self._max_pixels

        @tf.function(input_signature=[tf.TensorSpec([], tf.string),
                                      tf.TensorSpec([None, 5, 2], tf.float32)])
        def crop(data, landmarks):
            pixels = preprocessing.decode_rgb(data, max_pixels)
            crops = alignment.align(pixels, landmarks, size, tf.constant(template))
            return tf.map_fn(lambda c: tf.io.encode_jpeg(preprocessing.to_uint8(c),
                                                         quality=JPEG_QUALITY),
                             crops, fn_output_signature=tf.string)

        self._tf, self._crop = tf, crop

    def write(self, path, data, faces):
        """Writes the crops of `faces` (with landmarks) of the photo `data` at `path`."""
        faces = [(j, face) for j, face in enumerate(faces) if face.landmarks is not None]
        if not faces:
            return 0
        tf = self._tf
        jpegs = self._crop(tf.constant(data), tf.constant(
            [face.landmarks for _, face in faces], tf.float32)).numpy()
        for (j, _), jpeg in zip(faces, jpegs):
            with tf.io.gfile.GFile(f"{self._dir}/{crop_name(path, j)}", "wb") as f:
                f.write(jpeg)
        return len(faces)


def gender_label(gender):
    """"male"/"female"/None -> the labels CSV's gender field ("0", "1", "")."""
    from agegender import results

    return "" if gender is None else str(results.GENDERS.index(gender))


def write_labels(faces_dir, output_dir, report):
    """`labels.csv` in `faces_dir` from the annotation files in `output_dir` (read one file
    at a time: memory bounded by one file's rows), in their order."""
    import pyarrow.parquet as pq
    import tensorflow as tf

    with tf.io.gfile.GFile(f"{str(faces_dir).rstrip('/')}/{LABELS_FILE}", "w") as out:
        out.write("file,age,gender\n")  # first: read_labels_csv skips a header on line 1
        out.write(f"# Labels of the crops beside this file, pre-filled with the answers of "
                  f"the model {report['metadata']['model'].get('source')!r}: correct the "
                  "wrong ones, then pipeline.build_records --input='<this folder>/*.jpg' "
                  "--labels_csv=<this file>. gender: 0 male, 1 female, empty unknown.\n")
        for entry in report["files"]:
            with tf.io.gfile.GFile(f"{output_dir}/{entry['file']}", "rb") as f:
                data = io.BytesIO(f.read())
            rows = pq.read_table(data, columns=["path", "face_index", "landmarks", "age",
                                                "gender"]).to_pylist()
            lines = io.StringIO()
            writer = csv.writer(lines, lineterminator="\n")
            for row in rows:
                if row["face_index"] is not None and row["landmarks"] is not None:
                    writer.writerow([crop_name(row["path"], row["face_index"]),
                                     round(row["age"]), gender_label(row["gender"])])
            out.write(lines.getvalue())
