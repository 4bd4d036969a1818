"""Age and gender estimation pipeline on TensorFlow: Beam records, trainer, export, serving."""
from setuptools import find_packages, setup

setup(
    name="agegender-pipeline",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.11,<3.12",
    # The shipped packages only: `testing` (what tests and benchmarks make: tiny models,
    # synthetic photos and clips, hostile files), `benchmarks` and `tests` stay out of the
    # wheel (tests/architecture_test.py checks this list; .importlinter forbids importing it).
    packages=find_packages(include=["agegender*", "pipeline*", "trainer*", "export*", "serving*",
                                    "evaluation*", "faces*", "web*", "video*", "analyzer*",
                                    "commands*"]),
    # The alignment template faces.template computed from the training crops; the web page
    # (web/static) ships inside the package: no build step, nothing fetched at run time.
    package_data={"faces": ["*.json"],
                  "web": ["static/*.html", "static/*.css", "static/*.js"]},
    install_requires=[
        # The Python API (analyzer.inputs) encodes arrays and PIL images as PNG without
        # TensorFlow; faces.drawing draws the boxes.
        "pillow>=10",
        "tensorflow>=2.21,<2.22",
        "tensorflow-datasets>=4.9.10",
        # The tfrecord extra brings the crc32c implementation of the Beam TFRecord codec.
        "apache-beam[tfrecord]>=2.77",
        "numpy>=1.26",
        "absl-py>=2.1",
        "tensorflow-serving-api>=2.21,<2.22",
        "grpcio>=1.60",
        "matplotlib>=3.8",
        "tensorboard>=2.21,<2.22",  # TensorBoard logs of the trainer
        # The maintained LiteRT runtime (tflite-runtime is abandoned): export.export_litert
        # checks its files with it, evaluation runs them. Wheels for CPython 3.11 x86_64.
        "ai-edge-litert>=2.3,<3",
        # faces.networks reads the MTCNN weights from this package (MIT); they are joblib
        # pickles compressed with lz4. Pinned: the weight layout is that of this version.
        "mtcnn==1.0.0",
        "joblib>=1.3",
        "lz4>=4.0",
        # video/: PyAV reads and writes clips; its wheels carry FFmpeg (H.264, VP8, MPEG-4),
        # so no system ffmpeg. scipy: the tracker's Hungarian matching (linear_sum_assignment).
        "av>=18",
        "scipy>=1.11",
        # HTTP servers (serving/rest_api.py, web/, whose backend calls use its client too):
        # bounded request lines and headers, keep-alive, pipelining, on asyncio; the reasons
        # are in docs/serving.md and docs/web.md.
        "aiohttp>=3.9",
    ],
    # One installed command per program (commands.COMMANDS; a test checks the two agree).
    entry_points={"console_scripts": [
        "agegender-records = commands:records",
        "agegender-annotate = commands:annotate",
        "agegender-train = commands:train",
        "agegender-evaluate = commands:evaluate",
        "agegender-export = commands:export",
        "agegender-export-litert = commands:export_litert",
        "agegender-export-litert-faces = commands:export_litert_faces",
        "agegender-serve = commands:serve",
        "agegender-client = commands:client",
        "agegender-predict = commands:predict",
        "agegender-web = commands:web",
        "agegender-video = commands:video",
    ]},
    extras_require={
        # The records job on a Dask cluster (--runner=DaskRunner): the Beam dask extra is
        # dask and distributed (2024.4.2 or later); the same versions on every worker.
        "dask": ["apache-beam[dask]>=2.77", "dask>=2024.4.2", "distributed>=2024.4.2"],
        # benchmarks/video.py: IDF1 and ID switches with the MOT community's metrics library.
        "video-benchmark": ["motmetrics>=1.4"],
        # dask too: tests/pipeline/build_records_dask_test.py runs a real Dask cluster.
        # pytest-xdist runs the suite on every core (3.8 added --no-loadscope-reorder);
        # import-linter checks the layers (.importlinter) in `make test`.
        "test": ["pytest>=8", "pytest-timeout>=2.3", "pytest-xdist>=3.8", "import-linter>=2.1",
                 "pillow>=10",
                 "apache-beam[dask]>=2.77", "dask>=2024.4.2", "distributed>=2024.4.2",
                 # tests/web drive the headless Chromium of the system through /usr/bin/chromedriver
                 "selenium>=4.20",
                 # tests/pipeline/annotate_test.py reads the annotation job's Parquet rows as
                 # its users do (the job itself needs neither: pyarrow comes with Beam)
                 "pandas>=2", "duckdb>=1.0"],
    },
)
