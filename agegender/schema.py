"""The record schema: one definition shared by the writer, the trainer and the serving signature.

A record is one face. Its features (flat `tf.train.Example` keys):

  image/encoded    JPEG bytes, RGB, `image/height` x `image/width`
  image/height     int64
  image/width      int64
  image/source_id  the input file name (archive member or path relative to the input)
  image/sha256     hex SHA-256 of the decoded RGB pixels of the *input* image (dedup key)
  age              int64, years
  age/histogram    float32[NUM_AGE_BINS], the label distribution (see `age_histogram`)
  gender           int64, 0 male, 1 female, -1 unknown
  race             int64, 0 White, 1 Black, 2 Asian, 3 Indian, 4 Others, -1 unknown

`FEATURE_SPEC` parses these with `tf.io.parse_example`; `tfds_features()` describes the same
keys to TFDS so that `tfds.builder_from_directory` reads the output of the Beam job.

TensorFlow is imported by the functions that need it (and by `FEATURE_SPEC` on first
access, PEP 562): the names and labels here are read by TF-free code (the serving client,
the web page, the Python API's answer types).
"""
import functools

from agegender import serving_contract

DATASET_NAME = "utk_face"
SPLITS = ("train", "validation", "test")

IMAGE_ENCODED = "image/encoded"
IMAGE_HEIGHT = "image/height"
IMAGE_WIDTH = "image/width"
IMAGE_SOURCE_ID = "image/source_id"
IMAGE_SHA256 = "image/sha256"
AGE = "age"
AGE_HISTOGRAM = "age/histogram"
GENDER = "gender"
RACE = "race"

# Ages 0..100 in one-year bins; the last bin holds every age of 100 and above.
NUM_AGE_BINS = 101
MAX_AGE_BIN = NUM_AGE_BINS - 1

UNKNOWN = -1
GENDERS = ("male", "female")  # index = label
GENDER_LETTERS = serving_contract.GENDER_LETTERS  # the served `gender` output
RACES = ("White", "Black", "Asian", "Indian", "Others")  # index = label

# Keys of the metadata the writer stores beside the shards (in report.json and the TFDS
# dataset_info metadata), read back by the trainer.
META_AGE_DEVIATION = "age_deviation"
META_IMAGE_SIZE = "image_size"
# Present only for records built with --align_faces: how each face was detected and aligned
# (`faces.photo.describe`: the template's points and sha256, the face chosen, the detector).
META_FACE_ALIGNMENT = "face_alignment"

@functools.cache
def feature_spec():
    """The `tf.io` parsing spec of a record (also `schema.FEATURE_SPEC`)."""
    import tensorflow as tf

    return {
        IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string),
        IMAGE_HEIGHT: tf.io.FixedLenFeature([], tf.int64),
        IMAGE_WIDTH: tf.io.FixedLenFeature([], tf.int64),
        IMAGE_SOURCE_ID: tf.io.FixedLenFeature([], tf.string),
        IMAGE_SHA256: tf.io.FixedLenFeature([], tf.string),
        AGE: tf.io.FixedLenFeature([], tf.int64),
        AGE_HISTOGRAM: tf.io.FixedLenFeature([NUM_AGE_BINS], tf.float32),
        GENDER: tf.io.FixedLenFeature([], tf.int64, default_value=UNKNOWN),
        RACE: tf.io.FixedLenFeature([], tf.int64, default_value=UNKNOWN),
    }


def __getattr__(name):
    if name == "FEATURE_SPEC":
        return feature_spec()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def tfds_features():
    """The same features as `FEATURE_SPEC`, typed for TFDS (keys serialize identically)."""
    import tensorflow as tf
    import tensorflow_datasets as tfds  # imported lazily: only the writer and readers need it

    return tfds.features.FeaturesDict({
        IMAGE_ENCODED: tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
        IMAGE_HEIGHT: tf.int64,
        IMAGE_WIDTH: tf.int64,
        IMAGE_SOURCE_ID: tfds.features.Text(),
        IMAGE_SHA256: tfds.features.Text(),
        AGE: tf.int64,
        AGE_HISTOGRAM: tfds.features.Tensor(shape=(NUM_AGE_BINS,), dtype=tf.float32),
        GENDER: tf.int64,
        RACE: tf.int64,
    })


def make_example(*, encoded_jpeg, height, width, source_id, sha256, age, histogram,
                 gender=UNKNOWN, race=UNKNOWN):
    """Builds one record as a `tf.train.Example` with exactly the keys of `FEATURE_SPEC`."""
    import tensorflow as tf

    def _bytes(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    def _int(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))

    histogram = [float(x) for x in histogram]
    if len(histogram) != NUM_AGE_BINS:
        raise ValueError(f"age histogram has {len(histogram)} bins, expected {NUM_AGE_BINS}")
    return tf.train.Example(features=tf.train.Features(feature={
        IMAGE_ENCODED: _bytes(encoded_jpeg),
        IMAGE_HEIGHT: _int(height),
        IMAGE_WIDTH: _int(width),
        IMAGE_SOURCE_ID: _bytes(source_id.encode("utf-8")),
        IMAGE_SHA256: _bytes(sha256.encode("ascii")),
        AGE: _int(age),
        AGE_HISTOGRAM: tf.train.Feature(float_list=tf.train.FloatList(value=histogram)),
        GENDER: _int(gender),
        RACE: _int(race),
    }))


def parse_examples(serialized):
    """Parses a batch (or a scalar) of serialized records with `FEATURE_SPEC`."""
    import tensorflow as tf

    return tf.io.parse_example(serialized, feature_spec())


# The records directory (written by pipeline.build_records, read through agegender.records
# by the trainer, the evaluation and the benchmarks) is TFDS-compatible: dataset_info.json, features.json and shards named
#   {DATASET_NAME}-{split}.tfrecord-{shard:05d}-of-{num_shards:05d}
# plus REPORT_FILE, whose "metadata" object holds META_* values (age deviation, image size).
REPORT_FILE = "report.json"
SHARD_SUFFIX = ".tfrecord"


def shard_prefix(records_dir, split):
    """Path prefix of one split's shards (the writer appends -SSSSS-of-NNNNN)."""
    return f"{str(records_dir).rstrip('/')}/{DATASET_NAME}-{split}{SHARD_SUFFIX}"


def shard_pattern(records_dir, split):
    """Glob matching every shard of one split."""
    return shard_prefix(records_dir, split) + "-*-of-*"
