"""Listed inputs -> batches of photos for RunInference, formed the same way on every run.

A photo travels as `(key, bytes)`; the key is a plain tuple (Beam pickles a namedtuple's
type with every element) `(shard, position, path, archive, width, height)`:
`shard` the annotations file its rows go to (`parquet_sink.shard_of`), `position` its
place there (`(listing position, -1)` for a plain file, `(archive's position, member)` for
an archive member), `path` relative to --input (`<archive>/<member>` inside an archive),
`width`/`height` from its header.

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
decode): an input it refuses is a `Skip` with its reason, tagged SKIPPED.
"""
import apache_beam as beam

from agegender import image_header
from agegender import image_sources as sources
from agegender import labelled_inputs
from agegender.image_sources import Skip
from pipeline import batching, parquet_sink

SKIPPED = "skipped"
LOCAL = "local"  # ReadArchivePhotos: batches past the spread budget, answered where read


def _no_labels(source_id):
    return None  # photos to annotate carry no labels: `labelled_inputs.check`'s labeller


def checked_size(source_id, data, max_pixels):
    """`(width, height)` of a photo that passes the records job's checks, else its Skip."""
    result = labelled_inputs.check(source_id, data, _no_labels, max_pixels)
    if isinstance(result, Skip):
        return result
    size = image_header.read_size(data)
    return size.width, size.height


def _encoded_bytes(photo):
    return len(photo[1])


class PhotoBatches(batching.Batches):
    """Collects `(key, bytes)` into lists of at most `max_size` photos and `max_bytes`
    encoded bytes (a larger photo goes alone): `add` and `rest` return complete lists."""

    def __init__(self, max_size, max_bytes):
        super().__init__(_encoded_bytes, max_bytes, max_size)


class _Reader(beam.DoFn):
    def __init__(self, photos_per_file, max_batch_size, max_batch_bytes,
                 max_pixels=image_header.DEFAULT_MAX_PIXELS, follow_symlinks=False):
        self._per_file = photos_per_file
        self._max_size, self._max_bytes = max_batch_size, max_batch_bytes
        self._max_pixels = max_pixels
        self._follow = follow_symlinks

    def _batches(self):
        return PhotoBatches(self._max_size, self._max_bytes)


class ReadPhotos(_Reader):
    """`[(listing position, InputFile)]` (plain files) -> batches of photos; each input
    that cannot be used is a Skip (tagged SKIPPED)."""

    def process(self, group):
        batches = self._batches()
        for ordinal, item in group:
            data = sources.read_input(item, self._follow)
            size = data if isinstance(data, Skip) else checked_size(
                item.source_id, data, self._max_pixels)
            if isinstance(size, Skip):
                yield beam.pvalue.TaggedOutput(SKIPPED, size)
                continue
            key = (parquet_sink.shard_of(ordinal, None, self._per_file), (ordinal, -1),
                   item.source_id, None, *size)
            yield from batches.add((key, data))
        yield from batches.rest()


class ReadArchivePhotos(_Reader):
    """`(listing position, InputFile)` (an archive) -> batches of its members.

    An archive is one sequential stream, read by one worker. Its batches go out on the
    main output (to be spread over the workers) until `spread_bytes` of them, then tagged
    LOCAL (answered by the worker reading it, without a shuffle): what is spread is held in
    memory between the steps, and an archive's members can add up to far more than a
    worker's memory (`pipeline.transforms.ReadArchive` does the same for the records).
    The batches are the same either way.
    """

    def __init__(self, spread_bytes, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._spread_bytes = spread_bytes

    def process(self, element):
        ordinal, archive = element
        batches, spread = self._batches(), 0

        def route(full):
            nonlocal spread
            for batch in full:
                spread += sum(len(data) for _, data in batch)
                yield batch if spread <= self._spread_bytes else \
                    beam.pvalue.TaggedOutput(LOCAL, batch)

        member = -1
        for out in sources.iter_archive(archive, self._follow):
            member += 1
            if isinstance(out, Skip):
                if out.reason != sources.UNREADABLE_ARCHIVE:  # a member: name it in its archive
                    out = out._replace(source_id=f"{archive.source_id}/{out.source_id}")
                yield beam.pvalue.TaggedOutput(SKIPPED, out)
                continue
            name, data = out
            path = f"{archive.source_id}/{name}"
            size = checked_size(path, data, self._max_pixels)
            if isinstance(size, Skip):
                yield beam.pvalue.TaggedOutput(SKIPPED, size)
                continue
            key = (parquet_sink.shard_of(ordinal, member, self._per_file), (ordinal, member),
                   path, archive.source_id, *size)
            yield from route(batches.add((key, data)))
        yield from route(batches.rest())
