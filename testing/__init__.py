"""What tests and benchmarks make to run the project on: never part of the installed package.

- `tiny_models`: few-kilobyte Keras models honouring the trainer contract, written as a
  trainer job dir (`make_job_dir`), so the export, the servers and the Python API can be
  exercised without training.
- `synthetic_faces`: "in-the-wild" photos: real test-split UTKFace faces pasted on varied
  backgrounds, with their truth boxes.
- `synthetic_clips`: labelled clips: the same faces moving, crossing and leaving a scene.
- `reference_detector`: the mtcnn package's own detector, as `faces.detector` is checked
  against.
- `hostile_files`: issue 23's costly files (JPEG scan bomb, false-size zip...) built in memory.

setup.py's package list leaves this package out (no shipped command needs it at run time:
tests/architecture_test.py checks the wheel's packages, and a contract in .importlinter fails
any shipped module importing it). It is importable from the project root, where the tests
(`python -m pytest`) and the benchmarks (`python -m benchmarks.<name>`) run.
"""
