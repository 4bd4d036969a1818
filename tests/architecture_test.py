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
           "agegender.prediction_line", "agegender.schema", "agegender.tf_threads", "web.app",
           "serving.client", "analyzer")
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


def _shipped_packages():
    """find_packages with setup.py's own include list (read from the file, not copied)."""
    import ast

    from setuptools import find_packages

    tree = ast.parse(open(os.path.join(ROOT, "setup.py")).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "find_packages":
            include = next(ast.literal_eval(k.value) for k in node.keywords
                           if k.arg == "include")
            return find_packages(ROOT, include=include)
    raise AssertionError("setup.py calls no find_packages")


def test_the_wheel_holds_every_package_but_the_testing_one():
    """What tests and benchmarks make (`testing`) stays out of the wheel; every other
    top-level package of the tree goes in."""
    shipped = _shipped_packages()
    top = {name for name in os.listdir(ROOT)
           if os.path.isfile(os.path.join(ROOT, name, "__init__.py"))}
    assert "testing" in top  # the check below would be vacuous without it
    assert not [p for p in shipped if p.split(".")[0] in ("testing", "benchmarks", "tests")]
    assert {p.split(".")[0] for p in shipped} == top - {"testing", "benchmarks"}


def test_no_shipped_package_may_import_the_testing_one():
    """.importlinter's forbidden contract names every shipped package (a new one left out
    could import `testing` and fail only once installed)."""
    import configparser

    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, ".importlinter"))
    contract = config["importlinter:contract:testing"]
    assert contract["type"] == "forbidden"
    assert contract["forbidden_modules"].split() == ["testing"]
    assert set(contract["source_modules"].split()) == {
        p for p in _shipped_packages() if "." not in p}
