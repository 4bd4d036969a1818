"""Per-image work and the rules that place an image: label, decode, hash, split, dedup.

- `group_files` / `ReadFiles` / `ReadArchive`: listed inputs -> batches (lists) of
  `(source_id, bytes)` (an archive's members past its share of the spread budget are
  converted where they are read: `Face`s). `batch_weight` sizes the batches by encoded and
  decoded size; they are made inside `process`, never in `finish_bundle` (see
  `pipeline.portable` for why).
- `MakeRecord`: a batch of `(source_id, bytes)` -> `Face`s (label from the name or the
  labels CSV, image header checked against the pixel limit, decoded pixels hashed, resized,
  re-encoded as JPEG, serialized `tf.train.Example`).
- where a face goes comes from its pixel hash only (`agegender.splits`).
- `DedupShard`: one shard's faces -> the ones to write, sorted; copies -> skips.

Every DoFn sends an input it cannot use to the `SKIPPED` output as a `sources.Skip`, so one bad
file never stops the job and the report can account for every input.
"""
import collections
import os

import apache_beam as beam

from agegender import age_histogram, console, image_header, names, preprocessing, schema
from agegender import image_sources as sources
from agegender import labelled_inputs
from agegender import splits as splits_lib
from agegender.image_sources import Skip
from pipeline import batching

SKIPPED = "skipped"
FACES = "faces"  # ReadArchive's members converted in place

# Skip reasons of the dedup, owned by this module (the others are the image source's,
# `agegender.image_sources`, and the labels', `agegender.names`).
DUPLICATE = "duplicate"
CONFLICTING_LABELS = "conflicting_labels"

# One usable image. `example` is the serialized tf.train.Example; the other fields are
# what placement, dedup and the report need without parsing it again. Between steps a Face
# travels as a plain tuple (`tuple(face)`, back with `Face._make`): Beam's coder writes a
# pickled type with every namedtuple element, a measurable cost at 19k images x 3 steps.
Face = collections.namedtuple("Face", ["sha256", "source_id", "age", "gender", "race", "example"])


def _skip(source_id, reason, detail):
    return beam.pvalue.TaggedOutput(SKIPPED, Skip(source_id, reason, detail))


def group_files(files):
    """Listed plain files -> lists of them, each about one batch (`MAX_BATCH_WEIGHT`).

    The listing knows only a file's size, so a group is weighed by encoded bytes;
    `ReadFiles` splits it again by `batch_weight` once the headers are read. A group is the
    unit of work the runner spreads (one `beam.Create` element each).
    """
    groups, group, weight = [], [], 0
    for item in files:
        w = 1 + (item.size or 0) // BATCH_WEIGHT_BYTES
        if group and weight + w > MAX_BATCH_WEIGHT:
            groups.append(group)
            group, weight = [], 0
        group.append(item)
        weight += w
    if group:
        groups.append(group)
    return groups


class ReadFiles(beam.DoFn):
    """A group of `sources.InputFile`s (plain files) -> batches of `(source_id, bytes)`
    (`sources.read_input`; an input that cannot be read is a skip)."""

    def __init__(self, follow_symlinks=False):
        self._follow = follow_symlinks

    def process(self, group):
        batches = _batches()
        for item in group:
            data = sources.read_input(item, self._follow)
            if isinstance(data, Skip):
                yield beam.pvalue.TaggedOutput(SKIPPED, data)
            else:
                yield from batches.add((item.source_id, data))
        yield from batches.rest()


class ReadArchive(beam.DoFn):
    """`sources.InputFile` (an archive) -> its members, read in place.

    Members go out in batches of `(member_name, bytes)`, to be spread over the workers and
    converted there, until this archive's `spread_bytes` are used; every member after that
    is converted right here by `make_record` and goes out as a `Face` (tagged FACES) or a
    skip. Why: what goes to the other workers is held in memory between the steps (every
    member of the archive at once, several copies of each), and an archive's members can add
    up to far more than it weighs (a 1.4 MB tar.gz can hold 24 members of 60 MB); converted
    faces are small. Either way a member becomes the same record (`MakeRecord` is
    batch-invariant).
    """

    def __init__(self, make_record, spread_bytes, follow_symlinks=False):
        self._make = make_record
        self._spread_bytes = spread_bytes
        self._follow = follow_symlinks
        self._make_ready = False

    def process(self, item):
        if item.skip is not None:
            yield beam.pvalue.TaggedOutput(SKIPPED, item.skip)
            return
        spread, spread_batches, convert_batches = 0, _batches(), _batches()
        for out in sources.iter_archive(item, self._follow):
            if isinstance(out, Skip):
                yield beam.pvalue.TaggedOutput(SKIPPED, out)
            elif spread + len(out[1]) <= self._spread_bytes:
                spread += len(out[1])
                yield from spread_batches.add(out)
            else:
                for batch in convert_batches.add(out):
                    yield from self._convert(batch)
        yield from spread_batches.rest()
        for batch in convert_batches.rest():
            yield from self._convert(batch)

    def _convert(self, batch):
        if not self._make_ready:  # TF set-up only for an archive that needs it
            self._make.setup()
            self._make_ready = True
        for out in self._make.process(batch):
            yield out if isinstance(out, beam.pvalue.TaggedOutput) else \
                beam.pvalue.TaggedOutput(FACES, out)


def batch_weight(element):
    """`(source_id, bytes)` -> its weight in a batch (`_batches`).

    One per started 64 KiB of encoded bytes or per started 256 KiB of decoded pixels,
    whichever is more (the header says how many pixels an image decodes to; a 60 KB PNG can
    decode to 50 megapixels). A batch of small faces holds dozens of images, while a
    multi-megapixel photo travels alone: the decoded pixels of a whole batch are in memory at
    once, so a batch holds about MAX_BATCH_WEIGHT x 256 KiB of them, or one large image.
    """
    data = element[1]
    size = image_header.read_size(data)
    decoded = size.pixels * 3 if size is not None else 0  # decoded as RGB
    return 1 + max(len(data) // BATCH_WEIGHT_BYTES, decoded // BATCH_WEIGHT_DECODED_BYTES)


BATCH_WEIGHT_BYTES = 64 * 1024
BATCH_WEIGHT_DECODED_BYTES = 256 * 1024
MAX_BATCH_WEIGHT = 64


def _batches():
    """`(source_id, bytes)` into lists of total `batch_weight` <= MAX_BATCH_WEIGHT."""
    return batching.Batches(batch_weight, MAX_BATCH_WEIGHT)


class MakeRecord(beam.DoFn):
    """A batch (list) of `(source_id, bytes)` -> one `Face` or one skip per input.

    One DoFn rather than a chain of them: Beam pays a per-element cost at every step, and
    the image bytes would be carried between steps. The TF part (decode, resize, encode) of
    a whole batch runs as one `tf.function` call (`tf.map_fn` over the images): calling
    TensorFlow once per image costs about a third more CPU (benchmarks/build_records.py).
    Each image goes through exactly the ops it would go through alone, so batching never
    changes a record's bytes; if an image in the batch cannot be decoded, the batch is
    converted again one image at a time so that only that image is skipped.

    Before any decoder sees an image, the image source's checks run
    (`agegender.labelled_inputs.check`: empty, labels, the header's pixel limit), the same
    the evaluation runs; the decode op checks the limit in the graph as well.

    `align_faces` ("largest" or "score", None: off): each input is a photo whose face is
    found and aligned (`faces.photo.PhotoFaces`, the code serving's predict_photo runs):
    the chosen face's aligned crop at `image_size` is what is encoded, instead of the
    resized image; a photo without a face is skipped as `no_face`. The dedup key is still
    the hash of the decoded input pixels. Off, the records are byte for byte what they were
    before the option existed.
    """

    def __init__(self, *, image_size, age_deviation, jpeg_quality=95, labels_csv_rows=None,
                 min_age=names.DEFAULT_MIN_AGE, max_age=names.DEFAULT_MAX_AGE,
                 max_pixels=image_header.DEFAULT_MAX_PIXELS, align_faces=None,
                 progress_seconds=console.PROGRESS_SECONDS):
        self._progress_seconds = progress_seconds
        self._progress = None
        self._image_size = int(image_size)
        self._max_pixels = max_pixels
        self._deviation = float(age_deviation)
        self._quality = int(jpeg_quality)
        self._labeller = labelled_inputs.Labeller(labels_csv_rows, min_age, max_age)
        self._align = align_faces
        self._convert_one = self._convert_batch = None

    def _frame(self):
        """decoded uint8 pixels -> (found, float pixels [size, size, 3]) as TF ops."""
        import tensorflow as tf

        size = self._image_size
        if self._align is None:
            return lambda pixels: (tf.constant(True), preprocessing.resize_square(pixels, size))
        from faces import photo

        faces = photo.PhotoFaces(size, select=self._align, max_pixels=self._max_pixels)
        self._faces = faces  # kept alive: its variables are captured by the graphs below

        def aligned(pixels):
            best = faces.best_face_graph(pixels)
            return best[photo.FOUND], best[photo.CROP]
        return aligned

    def setup(self):
        import tensorflow as tf

        quality, max_pixels = self._quality, self._max_pixels
        frame = self._frame()

        def convert(data):
            pixels = preprocessing.decode_rgb(data, max_pixels)
            found, framed = frame(pixels)
            return pixels, found, tf.io.encode_jpeg(preprocessing.to_uint8(framed),
                                                    quality=quality)

        @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
        def convert_one(data):
            return convert(data)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def convert_batch(datas):
            def flat(data):
                pixels, found, jpeg = convert(data)
                return tf.reshape(pixels, [-1]), found, jpeg
            # Images differ in size: their pixels come back as one ragged row each.
            # parallel_iterations=1: the runner already keeps every core busy with bundles.
            return tf.map_fn(flat, datas, parallel_iterations=1, fn_output_signature=(
                tf.RaggedTensorSpec([None], tf.uint8, ragged_rank=0),
                tf.TensorSpec([], tf.bool), tf.TensorSpec([], tf.string)))

        self._tf = tf
        self._convert_one, self._convert_batch = convert_one, convert_batch
        # Per worker process: the runner shows nothing while the job runs (minutes for a
        # large folder), and its metrics come at the end.
        self._progress = console.Progress(f"records job, worker {os.getpid()}",
                                          "images processed", every=self._progress_seconds)

    def _converted(self, datas):
        """Encoded images -> [(sha256 of the decoded pixels, JPEG bytes or None when no face
        was found) or a TF error]."""
        if len(datas) > 1:
            try:
                pixels, found, jpegs = self._convert_batch(self._tf.constant(datas))
            except self._tf.errors.OpError:
                pass  # one of them is bad: find out which, one image at a time
            else:
                values, splits = pixels.values.numpy(), pixels.row_splits.numpy()
                view = memoryview(values)
                return [(splits_lib.pixel_hash(view[splits[i]:splits[i + 1]]),
                         jpeg if has else None)
                        for i, (has, jpeg) in enumerate(zip(found.numpy(), jpegs.numpy()))]
        results = []
        for data in datas:
            try:
                pixels, found, jpeg = self._convert_one(self._tf.constant(data))
            except self._tf.errors.OpError as e:  # not an image, truncated, unsupported...
                results.append(e)
            else:
                results.append((splits_lib.pixel_hash(pixels.numpy()),
                                jpeg.numpy() if found.numpy() else None))
        return results

    def process(self, batch):
        self._progress.add(len(batch))
        labelled = []
        for source_id, data in batch:
            result = labelled_inputs.check(source_id, data, self._labeller, self._max_pixels)
            if isinstance(result, Skip):
                yield beam.pvalue.TaggedOutput(SKIPPED, result)
            else:
                labelled.append((source_id, result, data))
        converted = self._converted([data for _, _, data in labelled])
        for (source_id, labels, _), result in zip(labelled, converted):
            if isinstance(result, Exception):
                yield _skip(source_id, sources.UNDECODABLE, sources.short_error(result))
                continue
            # The dedup key hashes the decoded input pixels (schema: image/sha256), so
            # re-encoded or renamed copies of one picture are still found.
            sha256, jpeg = result
            if jpeg is None:
                yield _skip(source_id, sources.NO_FACE, "the face detector found no face")
                continue
            example = schema.make_example(
                encoded_jpeg=jpeg, height=self._image_size, width=self._image_size,
                source_id=source_id, sha256=sha256, age=labels.age,
                histogram=age_histogram.age_histogram(labels.age, self._deviation),
                gender=labels.gender, race=labels.race)
            # deterministic=True sorts the Features map: byte-identical records on every run.
            yield (sha256, source_id, labels.age, labels.gender, labels.race,
                   example.SerializeToString(deterministic=True))  # a Face, as a plain tuple


def resolve_copies(faces, keep_all=False):
    """Faces with identical pixels -> (faces to write, skips), deterministically.

    Copies whose age or gender disagree are all dropped (which label is right is unknown).
    Otherwise the copy with the smallest source id is kept, or every copy with `keep_all`.
    Race is not a training target, so copies differing only in race count as agreeing.
    """
    faces = sorted(faces, key=lambda f: f.source_id)
    if len(faces) == 1:
        return faces, []
    if len({(f.age, f.gender) for f in faces}) > 1:
        labels = "; ".join(f"{f.source_id}: age {f.age} gender {f.gender}" for f in faces)
        return [], [Skip(f.source_id, CONFLICTING_LABELS,
                         f"pixel-identical copies disagree ({labels})") for f in faces]
    if keep_all:
        return faces, []
    kept = faces[0]
    return [kept], [Skip(f.source_id, DUPLICATE, f"pixel-identical to {kept.source_id} (kept)")
                    for f in faces[1:]]


class DedupShard(beam.DoFn):
    """`((split, shard), faces)` -> `((split, shard), faces to write, sorted by hash)`.

    The shard comes from the pixel hash, so all copies of an image meet here. The GroupByKey
    gives the faces in no particular order; sorting by (sha256, source id) fixes the order
    inside the shard file, and a hash order is also a good shuffle for training.
    """

    def __init__(self, keep_duplicates=False):
        self._keep_all = keep_duplicates

    def process(self, element):
        key, faces = element
        by_hash = collections.defaultdict(list)
        for face in faces:
            if face is not None:  # None: the writer's marker that the shard exists
                face = Face._make(face)
                by_hash[face.sha256].append(face)
        kept = []
        for sha256 in sorted(by_hash):
            faces_to_write, skips = resolve_copies(by_hash[sha256], self._keep_all)
            kept.extend(faces_to_write)
            for skip in skips:
                yield beam.pvalue.TaggedOutput(SKIPPED, skip)
        yield key, kept
