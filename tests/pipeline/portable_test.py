"""The Beam constructs the job limits itself to, on the DirectRunner (the DaskRunner runs
them in tests/pipeline/build_records_dask_test.py)."""
import apache_beam as beam
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
