"""The project's layers: checked statically by import-linter (`.importlinter`) and, for the
TF-free ground floor, at run time (a lazy `import tensorflow` inside a function is invisible
to a static check, and a module-level one in a dependency is what slows a client down)."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Importing any of these must not load TensorFlow, Keras or Beam: the answer types, labels and
# contract names a REST client needs, the web page's server, the serving client and the
# Python API's entry point (its SavedModel backend loads TensorFlow when it is used).
TF_FREE = ("agegender", "agegender.console", "agegender.arg_types", "agegender.errors",
           "agegender.results", "agegender.serving_contract", "agegender.names",
           "agegender.metrics", "agegender.splits", "agegender.photo_answers",
           "agegender.prediction_line", "agegender.schema", "web.app", "serving.client",
           "analyzer")
HEAVY = ("tensorflow", "keras", "apache_beam", "tensorflow_datasets")


@pytest.mark.parametrize("module", TF_FREE)
def test_ground_floor_and_clients_do_not_import_tensorflow(module):
    code = (f"import json, sys; import {module}; "
            f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.strip().splitlines()[-1]) == [], \
        f"import {module} loads {run.stdout.strip()}"


def test_import_layers_hold():
    """`lint-imports` (import-linter, installed with the test extra) keeps every contract in
    .importlinter; a backwards import fails here with the offending line."""
    linter = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    if not os.path.exists(linter):
        pytest.fail("lint-imports is missing: pip install -e '.[test]' installs import-linter")
    run = subprocess.run([linter, "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout
