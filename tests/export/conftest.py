"""Fixtures: tiny Keras models honouring the trainer contract, saved as trainer job dirs."""
import pytest

from export import testing


@pytest.fixture(scope="session")
def job_dirs(tmp_path_factory):
    """{name: job_dir} for a classification+gender, a regression and a range+gender model."""
    return {name: testing.make_job_dir(tmp_path_factory.mktemp(f"job_{name}"), **kw)
            for name, kw in testing.VARIANTS.items()}
