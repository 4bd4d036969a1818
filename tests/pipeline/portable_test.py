"""The Beam constructs the job limits itself to, on the DirectRunner (the DaskRunner runs
them in tests/pipeline/build_records_dask_test.py)."""
import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from pipeline import portable

IN_MEMORY = PipelineOptions(["--runner=DirectRunner", "--direct_running_mode=in_memory"])


class _EvenOdd(beam.DoFn):
    def setup(self):
        self.offset = 100  # set up before any element, as the wrapped DoFn expects

    def process(self, x):
        if x % 2:
            yield beam.pvalue.TaggedOutput("odd", x + self.offset)
        else:
            yield x


def test_outputs_are_kept_apart_by_tag():
    with beam.Pipeline(options=IN_MEMORY) as p:
        outs = p | beam.Create(range(7)) | "EvenOdd" >> portable.ParDoWithOutputs(_EvenOdd(), "odd")
        assert set(outs) == {portable.MAIN, "odd"}
        assert_that(outs[portable.MAIN], equal_to([0, 2, 4, 6]), label="main")
        assert_that(outs["odd"], equal_to([101, 103, 105]), label="odd")


def test_gather_gives_one_list_also_when_empty():
    with beam.Pipeline(options=IN_MEMORY) as p:
        full = p | "Full" >> beam.Create([3, 1, 2]) | "GatherFull" >> portable.Gather()
        empty = p | "Empty" >> beam.Create([]) | "GatherEmpty" >> portable.Gather()
        assert_that(full | beam.Map(sorted), equal_to([[1, 2, 3]]), label="full")
        assert_that(empty, equal_to([[]]), label="empty")


class _CountsSetUps(beam.DoFn):
    set_ups = 0  # over every copy, as a process would count them

    def __init__(self, name):
        self.name = name

    def setup(self):
        type(self).set_ups += 1
        self.ready = self.name

    def process(self, x):
        yield f"{self.ready}{x}"


def _copy(dofn):
    """What a runner does with a DoFn: a deserialized copy of the pipeline's."""
    from apache_beam.internal import pickler

    return pickler.loads(pickler.dumps(dofn))


def _bundle(tagging, elements):
    """What the DaskRunner does for every bundle: a new copy, set up, run, torn down."""
    copy = _copy(tagging)
    copy.setup()
    out = [o for e in elements for o in copy.process(e)]
    copy.teardown()
    return out


def test_a_dofn_is_set_up_once_per_process_however_many_bundles_copy_it(monkeypatch):
    monkeypatch.setattr(_CountsSetUps, "set_ups", 0)
    a, b = portable._Tagging(_CountsSetUps("a")), portable._Tagging(_CountsSetUps("b"))
    for i in range(5):
        assert _bundle(a, [i]) == [(portable.MAIN, f"a{i}")]
        assert _bundle(b, [i]) == [(portable.MAIN, f"b{i}")]
    assert _CountsSetUps.set_ups == 2  # once for a, once for b

    # Another thread (a runner's other worker thread) sets up its own copy.
    import threading
    done = []
    thread = threading.Thread(target=lambda: done.append(_bundle(a, [9])))
    thread.start()
    thread.join()
    assert done == [[(portable.MAIN, "a9")]] and _CountsSetUps.set_ups == 3


def test_the_set_up_copies_kept_are_bounded(monkeypatch):
    monkeypatch.setattr(_CountsSetUps, "set_ups", 0)
    monkeypatch.setattr(portable, "_SET_UP", type(portable._SET_UP)())
    fns = [portable._Tagging(_CountsSetUps(str(i))) for i in range(portable.MAX_SET_UP + 5)]
    for fn in fns:
        _bundle(fn, [0])
    assert len(portable._SET_UP) == portable.MAX_SET_UP
    _bundle(fns[-1], [0])  # still kept
    assert _CountsSetUps.set_ups == len(fns)
    _bundle(fns[0], [0])  # dropped: set up again
    assert _CountsSetUps.set_ups == len(fns) + 1


def test_a_dofn_with_a_teardown_is_refused():
    class _WithTeardown(beam.DoFn):
        def process(self, x):
            yield x

        def teardown(self):
            pass

    with pytest.raises(TypeError, match="_WithTeardown has a teardown"):
        portable.ParDoWithOutputs(_WithTeardown(), "odd")
