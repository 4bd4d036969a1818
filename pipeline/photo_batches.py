"""Listed inputs -> units of work -> batches of photos for RunInference, formed the same way
on every run, each file's last photo marked.

A photo travels as `(key, example)`; the key is a plain tuple (Beam pickles a namedtuple's
type with every element) `(shard, position, path, archive, width, height, closes)`:
`shard` the annotations file its rows go to (`parquet_sink.shard_of`), `position` its
place there (`(listing position, -1)` for a plain file, `(archive's position, member)` for
an archive member), `path` relative to --input (`<archive>/<member>` inside an archive),
`width`/`height` from its header (None for a plain file: read later), `closes` 0, or on
the last photo of its file, the number of photos the reader sent for that file.

The example of an archive member is its bytes (an archive is one stream: its members are
read where it is opened). A plain file's is a reference, `(path, source_id, listed size)`
(`file_ref`): `PhotoHandler` reads and checks it inside RunInference, right before its
batch is answered. Why: on the DaskRunner every step's output for a partition is one list,
held whole until the next step has run on it (`pipeline.portable`), so bytes handed from
the reader to RunInference would be every photo of a partition's units at once (tens of GB
of phone photos); references are a few hundred bytes each.

Why units of whole files (`units`: the plain files of one range of the listing, at most
`--photos_per_file` and small enough for at least `--min_shards` files, `range_size`; or
one archive): the rows are written in the step that makes them
(`pipeline.annotate`), so one reader must send all photos of a file, and say when it has.
Batches never span two files, and the last photo of a file carries its photo count, so the
writer downstream, in the same fused step, writes the file as soon as that photo's answer
is in (it checks the count) and nothing gathers rows across the workers. An archive is one
sequential stream, so a unit of its own (its members in chunks of `--photos_per_file`,
each a file); the work is spread over the workers one unit at a time.

Why the units go to the workers through a file (`write_units`: one JSON line per unit, in
the output's temporary directory) and not as the elements of a `beam.Create`: a Create's
values are pickled into the pipeline, which the runner copies, decodes and buffers again
at the Create's reshuffle; measured on the DirectRunner, the listing in a Create cost
~2.3 KB per input over the ~1.2 KB of the command's own list (`list_inputs`, 189,700
inputs). The graph carries `(file, offset, length)` per unit, and the command drops its
list before the job runs.

Why the job batches and not `beam.BatchElements`: BatchElements forms batches from what a
bundle holds and how long the last call took, so the same photos meet in different batches
from run to run and from runner to runner, and the model's per-face answers depend on the
batch they were computed in (up to ~1e-5 years on the tiny test model: another kernel
path for another batch size). Batches formed here, in listing order, by the handler's
`max_batch_size` and `max_batch_bytes`, are a function of the inputs only, so the answers
are identical on every run and runner. (Beam 2.77's DaskRunner also drops what a DoFn
emits in `finish_bundle`, where BatchElements emits each bundle's last batch:
`pipeline.portable`.)

Every input is read and checked as the records job does (`agegender.image_sources`:
links, FIFOs, bad names, sizes, archive member names; the header's pixel limit before any
decode): an input the listing or the archive refuses is a `Skip` with its reason, tagged
SKIPPED by the reader; a plain file refused when `PhotoHandler` reads it (swapped for a
FIFO or a link, grown past the size limit, empty, over the pixel limit, no image) is
answered with a `Refusal` of the same reason and detail, which the writer makes the same
Skip. Each unit also says how many inputs it sent or skipped (tagged INPUTS), for the
report's check that inputs = annotated + skipped.
"""
import json

import apache_beam as beam
from apache_beam.ml.inference.base import PredictionResult

from agegender import image_header
from agegender import image_sources as sources
from agegender import labelled_inputs
from agegender.image_sources import Skip
from pipeline import batching, inference_handler, parquet_sink

SKIPPED = "skipped"
INPUTS = "inputs"  # ReadPhotos: per unit, the inputs it read (photos sent + skips)
CLOSES = 6  # index of `closes` in a photo's key
LISTING_FILE = "listing.jsonl"  # the units of work, in the job's temporary directory


def _no_labels(source_id):
    return None  # photos to annotate carry no labels: `labelled_inputs.check`'s labeller


def checked_size(source_id, data, max_pixels):
    """`(width, height)` of a photo that passes the records job's checks, else its Skip."""
    result = labelled_inputs.check(source_id, data, _no_labels, max_pixels)
    if isinstance(result, Skip):
        return result
    size = image_header.read_size(data)
    return size.width, size.height


def file_ref(item):
    """What a plain file (a listed `InputFile`) travels to RunInference as: `(path,
    source_id, listed size)`, read by `PhotoHandler`."""
    return item.path, item.source_id, item.size


def example_bytes(example):
    """An example's encoded bytes, or for a `file_ref` its listed size (what a batch weighs:
    the size the listing saw; reading never takes more than MAX_INPUT_BYTES)."""
    return len(example) if isinstance(example, bytes) else example[2] or 0


def _encoded_bytes(photo):
    return example_bytes(photo[1])


def range_size(num_inputs, photos_per_file, min_shards):
    """The plain files' range of the listing per Parquet file: `photos_per_file`, or smaller
    when a listing of `num_inputs` would otherwise make fewer than `min_shards` ranges, so
    that a small folder is still several units of work for several workers: the listing
    cut in `min_shards` about equal ranges (ceil), or, where that makes fewer (a listing
    under min_shards^2), ranges of num_inputs // min_shards (never under 1). A function of
    the listing's length and the flags only: the same files on every runner."""
    size = -(-num_inputs // min_shards)
    if size and -(-num_inputs // size) < min_shards:
        size = num_inputs // min_shards
    return max(1, min(photos_per_file, size))


def write_units(inputs, per_range, directory):
    """Listed inputs -> the units of work (`units`), written to `directory`/LISTING_FILE (any
    filesystem TF knows; the workers read it), one JSON line each. Returns what the graph
    carries: each unit's `(file, offset, length)`, a few dozen bytes per unit instead of its
    inputs (see the module docstring)."""
    import tensorflow as tf

    tf.io.gfile.makedirs(directory)
    path, refs, offset = f"{directory}/{LISTING_FILE}", [], 0
    with tf.io.gfile.GFile(path, "wb") as f:
        for unit in units(inputs, per_range):
            line = (json.dumps([[ordinal, *item] for ordinal, item in unit]) + "\n").encode()
            f.write(line)
            refs.append((path, offset, len(line)))
            offset += len(line)
    return refs


def read_unit(ref):
    """`(file, offset, length)` from `write_units` -> the unit, `[(position, InputFile)]`."""
    import tensorflow as tf

    path, offset, length = ref
    with tf.io.gfile.GFile(path, "rb") as f:
        f.seek(offset)
        line = f.read(length)
    return [(ordinal, sources.InputFile(path_, source_id, size, is_archive,
                                        None if skip is None else Skip(*skip)))
            for ordinal, path_, source_id, size, is_archive, skip in json.loads(line)]


def units(inputs, per_range):
    """Listed inputs (`sources.list_inputs`, sorted) -> units of work, lists of
    `(listing position, InputFile)`: the plain files of each `per_range` range of the
    listing (one Parquet file, `range_size`), and each archive alone (its own files)."""
    out, files = [], {}
    for ordinal, item in enumerate(inputs):
        if item.is_archive:
            out.append([(ordinal, item)])
        else:
            files.setdefault(parquet_sink.shard_of(ordinal, None, per_range), []).append(
                (ordinal, item))
    return [*files.values(), *out]


class PhotoBatches(batching.Batches):
    """Collects `(key, bytes)` into lists of at most `max_size` photos and `max_bytes`
    encoded bytes (a larger photo goes alone): `add` and `rest` return complete lists."""

    def __init__(self, max_size, max_bytes):
        super().__init__(_encoded_bytes, max_bytes, max_size)


class FileBatches:
    """`PhotoBatches` that never span two files (`shard`, a key's first field), the last
    photo of each file marked with the file's photo count (`closes`). Photos come in file
    order: all of one file, then all of the next."""

    def __init__(self, max_size, max_bytes):
        self._batches = PhotoBatches(max_size, max_bytes)
        self._shard, self._count = None, 0

    def add(self, photo):
        key = photo[0]
        full = self._close() if self._count and key[0] != self._shard else []
        self._shard = key[0]
        self._count += 1
        return full + self._batches.add(photo)

    def rest(self):
        return self._close() if self._count else []

    def _close(self):
        batches = self._batches.rest()
        key, data = batches[-1][-1]
        batches[-1][-1] = (key[:CLOSES] + (self._count,), data)
        self._count = 0
        return batches


class ReadPhotos(beam.DoFn):
    """A unit of work (`write_units`) -> batches of its photos (`FileBatches`): an archive's
    members as bytes, plain files as references (`file_ref`), unread; each input that the
    listing or the archive refuses is a Skip (tagged SKIPPED); last, the unit's input count
    (tagged INPUTS)."""

    def __init__(self, photos_per_file, max_batch_size, max_batch_bytes,
                 max_pixels=image_header.DEFAULT_MAX_PIXELS, follow_symlinks=False,
                 per_range=None):
        self._per_file = photos_per_file
        self._range = per_range or photos_per_file
        self._max_size, self._max_bytes = max_batch_size, max_batch_bytes
        self._max_pixels = max_pixels
        self._follow = follow_symlinks

    def process(self, ref):
        unit = read_unit(ref)
        batches, inputs = FileBatches(self._max_size, self._max_bytes), 0
        is_archive = len(unit) == 1 and unit[0][1].is_archive
        for photo in self._archive(*unit[0]) if is_archive else self._files(unit):
            inputs += 1
            if isinstance(photo, Skip):
                yield beam.pvalue.TaggedOutput(SKIPPED, photo)
            else:
                yield from batches.add(photo)
        yield from batches.rest()
        yield beam.pvalue.TaggedOutput(INPUTS, inputs)

    def _member(self, source_id, data, ordinal, member, archive):
        """`(key, bytes)` of an archive member that passes the checks, else its Skip."""
        size = checked_size(source_id, data, self._max_pixels)
        if isinstance(size, Skip):
            return size
        return ((parquet_sink.shard_of(ordinal, member, self._per_file),
                 (ordinal, member), source_id, archive, *size, 0), data)

    def _files(self, unit):
        """Plain files: `(key, file_ref)`, unread (`PhotoHandler` reads them), or the Skip
        the listing already holds (a link, a special file, a bad name)."""
        for ordinal, item in unit:
            if item.skip is not None:
                yield item.skip
                continue
            yield ((parquet_sink.shard_of(ordinal, None, self._range), (ordinal, -1),
                    item.source_id, None, None, None, 0), file_ref(item))

    def _archive(self, ordinal, archive):
        member = -1
        for out in sources.iter_archive(archive, self._follow):
            member += 1
            if isinstance(out, Skip):
                if out.reason != sources.UNREADABLE_ARCHIVE:  # a member: name it in its archive
                    out = out._replace(source_id=f"{archive.source_id}/{out.source_id}")
                yield out
                continue
            name, data = out
            yield self._member(f"{archive.source_id}/{name}", data, ordinal, member,
                               archive.source_id)


class PhotoHandler(inference_handler.AnalyzerHandler):
    """`AnalyzerHandler` whose examples are what `ReadPhotos` sends: an archive member's bytes
    (checked by the reader), or a plain file's `file_ref`, read and checked here
    (`sources.read_input`, `checked_size`: the reader's limits and skips) right before its
    batch is answered, so no step's output holds a plain file's bytes.

    Answers, in the order the examples came: `PredictionResult(example, faces)`; for a
    plain file the example becomes `(width, height, bytes or None)` (its header's size; the
    bytes only with `keep_bytes`, for the face crops, and only for a photo with a face);
    a file refused on reading is answered with a `Refusal` of its Skip's reason and detail.
    """

    def __init__(self, model, *, follow_symlinks=False, keep_bytes=False, **kwargs):
        super().__init__(model, **kwargs)
        self.follow_symlinks = bool(follow_symlinks)
        self.keep_bytes = bool(keep_bytes)

    def read(self, ref):
        """A `file_ref` -> `(bytes, width, height)`, or the Skip saying why not."""
        path, source_id, size = ref
        data = sources.read_input(sources.InputFile(path, source_id, size, False),
                                  self.follow_symlinks)
        if isinstance(data, Skip):
            return data
        checked = checked_size(source_id, data, self.max_image_pixels)
        return checked if isinstance(checked, Skip) else (data, *checked)

    def run_inference(self, batch, model, inference_args=None):
        examples = list(batch)
        answers, photos, read = [None] * len(examples), [], {}
        for i, example in enumerate(examples):
            if isinstance(example, bytes):
                photos.append((i, example))
                continue
            got = self.read(example)
            if isinstance(got, Skip):
                answers[i] = PredictionResult(example, inference_handler.Refusal(
                    got.reason, got.detail))
            else:
                read[i] = got
                photos.append((i, got[0]))
        if photos:
            results = super().run_inference([data for _, data in photos], model,
                                            inference_args)
            for (i, _), result in zip(photos, results):
                if i in read:  # a plain file: its size, and its bytes only if kept
                    data, width, height = read[i]
                    faces = result.inference
                    keep = (self.keep_bytes and faces
                            and not isinstance(faces, inference_handler.Refusal))
                    result = PredictionResult((width, height, data if keep else None), faces)
                answers[i] = result
        return answers

    def get_num_bytes(self, batch):
        return sum(example_bytes(example) for example in batch)
