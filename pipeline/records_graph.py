"""The records job as one Beam graph (`build_pipeline(p, inputs, options)`): face images ->
sharded, leak-free TFRecords and the report, and what the records depend on
(`BuildOptions`, all of it stored in report.json's metadata).

The steps are owned elsewhere: reading and converting the inputs (`pipeline.transforms`),
the shard plan (`pipeline.shard_plan`), writing shards and the report (`pipeline.writer`),
the constructs every runner runs the same way (`pipeline.portable`). The command line and
the publication of the output directory are `pipeline.build_records`'.
"""
import dataclasses

import apache_beam as beam

from agegender import age_histogram, console, image_header, names, schema, splits
from faces import photo as face_photo
from pipeline import portable, shard_plan, transforms, writer

DEFAULT_IMAGE_SIZE = 160  # the trainer's default input is 128 px: room for crop augmentation
DEFAULT_AGE_DEVIATION = age_histogram.DEFAULT_DEVIATION
DEFAULT_SPLIT = splits.DEFAULT_FRACTIONS
DEFAULT_JPEG_QUALITY = 95
# Member bytes of all archives together that are handed to other workers undecoded (and so
# held in memory between steps, several copies); later members are converted where they are
# read. The shared UTKFace set (93 MB) fits whole, so it is still converted on every core.
DEFAULT_ARCHIVE_SPREAD_MB = 128


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """What the records depend on (all of it is stored in report.json's metadata)."""
    output_dir: str
    image_size: int = DEFAULT_IMAGE_SIZE
    age_deviation: float = DEFAULT_AGE_DEVIATION
    split: tuple = DEFAULT_SPLIT  # fractions for schema.SPLITS, in that order
    keep_duplicates: bool = False
    min_age: int = names.DEFAULT_MIN_AGE
    max_age: int = names.DEFAULT_MAX_AGE
    jpeg_quality: int = DEFAULT_JPEG_QUALITY
    target_shard_mb: float = writer.DEFAULT_TARGET_SHARD_MB
    min_shards: int = writer.DEFAULT_MIN_SHARDS
    max_image_pixels: int = image_header.DEFAULT_MAX_PIXELS
    follow_symlinks: bool = False
    align_faces: bool = False  # detect + align each input (faces.photo); no face: a skip
    face_select: str = face_photo.LARGEST  # which face of a photo: largest box or score

    @property
    def fractions(self):
        return tuple(zip(schema.SPLITS, self.split))

    def metadata(self, extra=None):
        # Only aligned records carry the face_alignment entry: unaligned ones keep the
        # report of the records written before the option existed.
        aligned = {}
        if self.align_faces:
            aligned = {schema.META_FACE_ALIGNMENT: face_photo.describe(select=self.face_select)}
        return {
            **aligned,
            schema.META_AGE_DEVIATION: self.age_deviation,
            schema.META_IMAGE_SIZE: self.image_size,
            "splits": dict(self.fractions),
            "options": {"keep_duplicates": self.keep_duplicates, "min_age": self.min_age,
                        "max_age": self.max_age, "jpeg_quality": self.jpeg_quality,
                        "target_shard_mb": self.target_shard_mb, "min_shards": self.min_shards,
                        "max_image_pixels": self.max_image_pixels,
                        "follow_symlinks": self.follow_symlinks, **(extra or {})},
        }


def _one(_):
    return 1


def _tagged(value, tag):
    return tag, value


def _finalize(entries, output_dir, metadata):
    shards = [value for tag, value in entries if tag == "shard"]
    skips = [value for tag, value in entries if tag == "skip"]
    num_inputs = sum(value for tag, value in entries if tag == "inputs")
    return writer.finalize(None, shards, skips, num_inputs, output_dir=output_dir,
                           metadata=metadata)


def build_pipeline(p, inputs, options, labels_csv_rows=None, report_extra=None,
                   archive_spread_bytes=DEFAULT_ARCHIVE_SPREAD_MB << 20,
                   progress_seconds=console.PROGRESS_SECONDS, side_inputs=True):
    """Adds the whole job to pipeline `p`; returns the PCollection holding the report dict.

    inputs: `agegender.image_sources.InputFile`s (from its `list_inputs`); options:
    `BuildOptions`;
    labels_csv_rows: `names.read_labels_csv(...)` output, or None to label from file names;
    archive_spread_bytes: archive member bytes, over all archives, spread to other workers
    undecoded (see transforms.ReadArchive; it bounds memory and never changes a record);
    progress_seconds: each worker prints images processed and records written so far this
    often (`agegender.console.Progress`; 0: never).
    side_inputs: False brings the shard plan to the faces through a GroupByKey instead of a
    side input, for a runner that computes a side input again in every task reading it
    (the DaskRunner, see `pipeline.portable`); True elsewhere, where it is cheaper (one
    shuffle of the records fewer: ~8% less CPU on the DirectRunner). Same records either way.

    Only constructs every runner runs the same way (`pipeline.portable`): no tagged outputs
    but through `portable.ParDoWithOutputs`, no finish_bundle outputs, one side input.
    """
    files = [f for f in inputs if not f.is_archive]
    archives = [f for f in inputs if f.is_archive]
    make_record = transforms.MakeRecord(
        image_size=options.image_size, age_deviation=options.age_deviation,
        jpeg_quality=options.jpeg_quality, labels_csv_rows=labels_csv_rows,
        min_age=options.min_age, max_age=options.max_age, max_pixels=options.max_image_pixels,
        align_faces=options.face_select if options.align_faces else None,
        progress_seconds=progress_seconds)
    data, source_skips, archive_faces = [], [], []
    # Inputs are counted where they are known, before any shuffle: the listed files, and
    # archive members as the archive is read. finalize checks inputs = written + skipped.
    input_counts = [p | "CountFiles" >> beam.Create([len(files)])]
    if files:
        # Create puts everything in one bundle; the Reshuffle lets the runner spread the
        # groups of files over all workers (each is read and converted where it lands).
        read = (p | "ListFiles" >> beam.Create(transforms.group_files(files))
                | "SpreadFiles" >> beam.Reshuffle()
                | "ReadFiles" >> portable.ParDoWithOutputs(
                    transforms.ReadFiles(options.follow_symlinks), transforms.SKIPPED))
        data.append(read[portable.MAIN])
        source_skips.append(read[transforms.SKIPPED])
    if archives:
        # An archive is one sequential stream: read by one worker, then its members spread
        # (up to each archive's equal share of the budget; the rest is converted in place).
        read_archive = transforms.ReadArchive(
            make_record, archive_spread_bytes // len(archives), options.follow_symlinks)
        members = (p | "ListArchives" >> beam.Create(archives)
                   | "ReadArchives" >> portable.ParDoWithOutputs(
                       read_archive, transforms.SKIPPED, transforms.FACES))
        data.append(members[portable.MAIN] | "SpreadMembers" >> beam.Reshuffle())
        source_skips.append(members[transforms.SKIPPED])
        archive_faces.append(members[transforms.FACES])
        input_counts += [members[portable.MAIN] | "MembersInBatch" >> beam.Map(len),
                         members[transforms.FACES] | "OneMemberFace" >> beam.Map(_one),
                         members[transforms.SKIPPED] | "OneMemberSkip" >> beam.Map(_one)]
    batches = data | "AllInputs" >> beam.Flatten()
    source_skips = source_skips | "SourceSkips" >> beam.Flatten()

    made = batches | "MakeRecords" >> portable.ParDoWithOutputs(make_record, transforms.SKIPPED)
    faces = [made[portable.MAIN], *archive_faces] | "AllFaces" >> beam.Flatten()

    target_shard_bytes = int(options.target_shard_mb * 1024 * 1024)
    keyed, plan = shard_plan.assign_shards(p, faces, options.fractions, target_shard_bytes,
                                           options.min_shards, inputs, side_inputs)
    markers = plan | "ShardMarkers" >> beam.FlatMap(writer.shard_markers)
    deduped = ((keyed, markers) | "WithMarkers" >> beam.Flatten()
               | "GroupByShard" >> beam.GroupByKey()
               | "Dedup" >> portable.ParDoWithOutputs(
                   transforms.DedupShard(options.keep_duplicates), transforms.SKIPPED))
    written = deduped[portable.MAIN] | "WriteShards" >> beam.ParDo(
        writer.WriteShard(options.output_dir, progress_seconds))

    skips = ((source_skips, made[transforms.SKIPPED], deduped[transforms.SKIPPED])
             | "AllSkips" >> beam.Flatten()
             | "CountSkips" >> beam.Map(writer.count_skip))
    num_inputs = (input_counts | "InputCounts" >> beam.Flatten()
                  | "KeyInputs" >> beam.Map(_tagged, "inputs")
                  | "SumInputs" >> beam.CombinePerKey(sum))  # ("inputs", n): lifted where it can be
    entries = ((written | "TagShards" >> beam.Map(_tagged, "shard"),
                skips | "TagSkips" >> beam.Map(_tagged, "skip"), num_inputs)
               | "AllEntries" >> beam.Flatten())
    # Last: on the DaskRunner only what the last transform depends on is computed.
    return (entries | "ReportEntries" >> portable.Gather()
            | "Finalize" >> beam.Map(_finalize, output_dir=options.output_dir,
                                     metadata=options.metadata(report_extra)))
