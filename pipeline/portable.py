"""The part of the Beam model the job uses, so that every runner it names runs it the same way.

Beam 2.77's DaskRunner (`apache_beam.runners.dask`, which turns a pipeline into Dask bags)
runs only part of the model. What it does with the rest was found by running it
(docs/scale_out.md), and the job avoids all of it:

- A ParDo's tagged outputs are not kept apart: every consumer of any of its outputs gets all
  of them. -> `ParDoWithOutputs`: one collection of `(tag, value)`, picked apart by tag.
- What a DoFn emits in `finish_bundle` is dropped (a bundle's results are collected before
  it is called): `beam.BatchElements` loses every bundle's last batch. -> The job batches
  inside `process` (`transforms.ReadFiles`, `transforms.ReadArchive`).
- A side input (`AsSingleton`, `AsList`...) is computed again, from the start of the
  pipeline, inside every task that reads it; `CombineGlobally`, `ToDict` and
  `Count.Globally` use one for their default. The job's shard plan would convert every
  image several times over. -> Small results meet the data in a `GroupByKey` instead:
  `Gather` here for the report's entries, and on the DaskRunner the shard plan's join
  (`records_graph.build_pipeline(side_inputs=False)`; elsewhere a side input is cheaper).
- `Reshuffle` does nothing, and nothing else repartitions: a `Create` is cut into
  partitions (128 elements each by default), a `GroupByKey` keeps its input's number and a
  `Flatten` adds them up, so every shuffle downstream (a Dask "tasks" shuffle, ~n^2
  tasks for n <= 32 partitions) grows with the first `Create`'s partitions. -> The job's
  `Create` elements are groups of files, and `runner_setup.dask_partitions` sets their
  number (--dask_npartitions) from the cluster's worker threads and the input size: 300
  partitions of 64 faces made a 742 s run of what takes ~40 s with 8; one per thread
  was faster still on a busy machine, the same on a quiet one (docs/scale_out.md).
- `DoFn.setup` and `teardown` run for every bundle (Dask partition), on a new copy of the
  DoFn: `MakeRecord` would trace its TF functions (~0.4 s, more than converting a batch)
  in every one. -> `ParDoWithOutputs` keeps a set-up copy per process and thread and
  reuses it, as the other runners reuse a DoFn across bundles.
- Beam metrics are not collected (`result.metrics()` raises NotImplementedError; counters
  are no-ops): report.json has every count, and the job's summary is read from it.
- Beam's file sinks (`iobase.WriteImpl`; tried with `WriteToText`, 3 shards) wrote the
  right files but left their `beam-temp-*` directories behind, one with stale parts (the
  sink's set-up and finalisation hang on side inputs, computed again per reader: three
  temporary directories for one write). -> The job
  writes its shards itself (`writer.WriteShard`: a temporary name, then a rename) and
  `writer.finalize` removes its temporary directory, on every runner.
- Only what the last transform applied depends on is computed: the job ends in `Finalize`,
  which depends on every branch (and checks inputs = written + skipped).

Each construct here is plain Beam, so the other runners (Direct, Dataflow, Flink) run it too.
"""
import collections
import threading
import uuid

import apache_beam as beam

MAIN = "main"

# Set-up copies of the DoFns `_Tagging` runs, in this process: {(key, thread): DoFn}, the
# most recent MAX_SET_UP (enough for every DoFn of a few pipelines; older ones are dropped,
# never torn down, so the job's DoFns have no teardown).
_SET_UP = collections.OrderedDict()
_SET_UP_LOCK = threading.Lock()
MAX_SET_UP = 32


class _Tagging(beam.DoFn):
    """Runs `fn` and emits each of its outputs as `(tag, value)` (MAIN for the main output).

    `fn` is set up once per process and thread, its set-up copy reused by every bundle
    there (see the module docstring: the DaskRunner sets up a new copy for every bundle).
    """

    def __init__(self, fn):
        self._fn = fn
        self._key = uuid.uuid4().hex  # the same in every copy the runner deserializes

    def setup(self):
        key = (self._key, threading.get_ident())
        with _SET_UP_LOCK:
            fn = _SET_UP.get(key)
            if fn is not None:
                _SET_UP.move_to_end(key)
        if fn is None:
            self._fn.setup()
            fn = self._fn
            with _SET_UP_LOCK:
                _SET_UP[key] = fn
                while len(_SET_UP) > MAX_SET_UP:
                    _SET_UP.popitem(last=False)
        self._fn = fn

    def process(self, element):
        for out in self._fn.process(element):
            if isinstance(out, beam.pvalue.TaggedOutput):
                yield out.tag, out.value
            else:
                yield MAIN, out


def _pick(tagged, tag):
    if tagged[0] == tag:
        yield tagged[1]


class ParDoWithOutputs(beam.PTransform):
    """`beam.ParDo(fn).with_outputs(*tags, main=MAIN)` for every runner: -> {tag: PCollection}.

    `fn` is a DoFn whose `process(element)` yields values and `TaggedOutput`s (no
    `finish_bundle` outputs, no side inputs, no teardown: it is set up once per process and
    thread, see `_Tagging`). The `(tag, value)` pairs are one collection,
    each tag's values a FlatMap over it (fused with the ParDo on the runners that fuse).
    """

    def __init__(self, fn, *tags):
        super().__init__()
        if type(fn).teardown is not beam.DoFn.teardown:
            raise TypeError(f"{type(fn).__name__} has a teardown, which ParDoWithOutputs "
                            "never calls (its set-up copy is kept for the process)")
        self._fn = fn
        self._tags = (MAIN, *tags)

    def expand(self, pcoll):
        tagged = pcoll | "Tag" >> beam.ParDo(_Tagging(self._fn))
        return {tag: tagged | f"Pick_{tag}" >> beam.FlatMap(_pick, tag) for tag in self._tags}


def _keyed(element):
    return None, (True, element)


def _values(group):
    return [value for real, value in group[1] if real]


class Gather(beam.PTransform):
    """A (small) collection -> one element: the list of all its elements, in no set order.

    Also when the collection is empty (a seed element is grouped with it). This is what
    `AsList` / `CombineGlobally` would give, through a `GroupByKey`, which every runner
    computes once; everything goes to one worker, so only for small things (the shard
    sizes, the report's entries).
    """

    def expand(self, pcoll):
        seed = pcoll.pipeline | "Seed" >> beam.Create([(None, (False, None))])
        return ((pcoll | "Key" >> beam.Map(_keyed), seed) | "WithSeed" >> beam.Flatten()
                | "Group" >> beam.GroupByKey() | "Values" >> beam.Map(_values))
