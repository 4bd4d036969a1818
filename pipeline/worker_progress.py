"""Progress lines of a Beam DoFn, per worker process: the runner shows nothing while a job
runs (minutes for a large folder), and its metrics come at the end."""
import os

import apache_beam as beam

from agegender import console


class ProgressDoFn(beam.DoFn):
    """A DoFn whose `setup` makes `self._progress`, a `console.Progress` printing
    "<job>, worker <pid>: N <unit> so far" at most every `progress_seconds`."""

    def __init__(self, job, unit, progress_seconds=console.PROGRESS_SECONDS):
        super().__init__()
        self._progress_line = (job, unit, progress_seconds)
        self._progress = None

    def setup(self):
        job, unit, every = self._progress_line
        self._progress = console.Progress(f"{job}, worker {os.getpid()}", unit, every=every)
