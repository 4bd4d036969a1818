"""`FaceAnalyzer`: one object, any backend, typed answers.

    analyzer = FaceAnalyzer.load("models/age")   # SavedModel (version or base dir), job dir,
                                                 # .tflite, "grpc://HOST:8500", "http://HOST:8501"
    faces = analyzer.analyze("photo.jpg")        # path | bytes | HxWx3 uint8 RGB array | PIL image
    analyzer.analyze_batch([a, b])               # one model call for the batch
    analyzer.estimate_crop(aligned_crop)         # serving_default on an aligned crop -> Face

Owns choosing the backend from what `load` is given, turning any input into encoded bytes
under the decode limits (`analyzer.inputs`), and the batch/one-by-one policy. The backends
(`analyzer.backends`: in-process SavedModel or job dir, LiteRT, TF Serving over gRPC or
REST) only answer encoded photos and crops with `Face`s (`agegender.photo_answers`).
Each backend's heavy imports (TensorFlow, the LiteRT runtime, gRPC) happen when it is
created, so a REST analyzer never loads TensorFlow.
"""
import os

from agegender import image_header
from agegender import serving_contract as contract
from agegender.errors import ImageError, ModelLoadError
from analyzer import inputs

DEFAULT_TIMEOUT = 10.0
GRPC, REST = "grpc", "rest"
_SCHEMES = {"grpc://": GRPC, "http://": REST}
RAISE, RETURN = "raise", "return"


class FaceAnalyzer:
    """Answers photos and aligned crops with `agegender.Face`s. Create it with `load` or a
    `from_*` constructor; close it (or use `with`) to release a server connection."""

    def __init__(self, backend, max_image_pixels=image_header.DEFAULT_MAX_PIXELS):
        self._backend = backend
        self.max_image_pixels = inputs.check_max_pixels(max_image_pixels)

    # -- construction -----------------------------------------------------------------

    @classmethod
    def load(cls, model, *, model_name=contract.DEFAULT_MODEL_NAME, timeout=DEFAULT_TIMEOUT,
             max_image_pixels=image_header.DEFAULT_MAX_PIXELS, **options):
        """`model`: a SavedModel directory (a version, or a base with numbered versions), a
        trainer job dir, a `.tflite` file, or a TF Serving address "grpc://HOST:PORT" /
        "http://HOST:PORT". `options` go to the chosen `from_*`."""
        model = os.fspath(model)
        for scheme, protocol in _SCHEMES.items():
            if model.startswith(scheme):
                return cls.from_server(model[len(scheme):].rstrip("/"), protocol=protocol,
                                       model_name=model_name, timeout=timeout,
                                       max_image_pixels=max_image_pixels, **options)
        if "://" in model and not model.startswith(("gs://", "s3://", "hdfs://")):
            raise ModelLoadError(f"{model!r}: a server address is grpc://HOST:PORT or "
                                 "http://HOST:PORT")
        if model.endswith(".tflite"):
            return cls.from_litert(model, max_image_pixels=max_image_pixels, **options)
        from analyzer import model_paths

        if model_paths.is_job_dir(model):
            return cls.from_job_dir(model, max_image_pixels=max_image_pixels, **options)
        return cls.from_saved_model(model, max_image_pixels=max_image_pixels, **options)

    @classmethod
    def from_saved_model(cls, path, *, max_image_pixels=image_header.DEFAULT_MAX_PIXELS):
        """An exported SavedModel in process (its predict_photo and serving_default
        signatures): a version directory or a base directory (the newest version)."""
        from analyzer.backends import saved_model

        return cls(saved_model.SavedModelBackend(os.fspath(path)), max_image_pixels)

    @classmethod
    def from_job_dir(cls, path, *, max_image_pixels=image_header.DEFAULT_MAX_PIXELS):
        """A trainer job dir (model.keras + model_spec.json) in process, through the same
        functions the export puts in its signatures."""
        from analyzer.backends import job_dir

        return cls(job_dir.JobDirBackend(os.fspath(path), max_image_pixels), max_image_pixels)

    @classmethod
    def from_litert(cls, path, *, faces_dir=None, num_threads=None,
                    max_image_pixels=image_header.DEFAULT_MAX_PIXELS):
        """A LiteRT age model (`export.export_litert`); photos need the LiteRT face networks
        (`export.export_litert_faces`): `faces_dir`, default the .tflite file's directory
        when it holds them."""
        from analyzer.backends import litert

        return cls(litert.LiteRTBackend(os.fspath(path), faces_dir=faces_dir,
                                        num_threads=num_threads,
                                        max_image_pixels=max_image_pixels), max_image_pixels)

    @classmethod
    def from_server(cls, address, *, protocol=GRPC, model_name=contract.DEFAULT_MODEL_NAME,
                    timeout=DEFAULT_TIMEOUT, version=None,
                    max_image_pixels=image_header.DEFAULT_MAX_PIXELS):
        """TF Serving (or `serving.server`) at "HOST:PORT" over gRPC or REST."""
        from analyzer.backends import remote

        if protocol not in (GRPC, REST):
            raise ModelLoadError(f"protocol must be {GRPC!r} or {REST!r}, got {protocol!r}")
        return cls(remote.RemoteBackend(address, protocol, model_name=model_name,
                                        timeout=timeout, version=version), max_image_pixels)

    # -- answers ----------------------------------------------------------------------

    @property
    def info(self):
        """`agegender.ModelInfo` of the loaded model."""
        return self._backend.info

    def analyze(self, image):
        """Every face found in one photo -> list[Face] (largest-score first; [] if none).
        Raises ImageError for an input that is refused, ServerError for a server failure."""
        return self.analyze_batch([image])[0]

    def analyze_batch(self, images, *, on_error=RAISE):
        """Photos -> one list[Face] per photo, in one model call. `on_error="return"`: a
        refused photo's entry is its `ImageError` and the others are answered."""
        return self._run(self._backend.photos, images, on_error)

    def estimate_crop(self, crop):
        """One face crop already aligned like the training faces -> Face (box None)."""
        return self.estimate_crops([crop])[0]

    def estimate_crops(self, crops, *, on_error=RAISE):
        """Aligned face crops -> one Face each, in one model call (serving_default)."""
        return self._run(self._backend.crops, crops, on_error)

    def _run(self, call, images, on_error):
        if on_error not in (RAISE, RETURN):
            raise ValueError(f"on_error must be {RAISE!r} or {RETURN!r}, got {on_error!r}")
        encoded = []
        for image in images:
            try:
                encoded.append(inputs.encode(image, self.max_image_pixels))
            except ImageError as e:
                if on_error == RAISE:
                    raise
                encoded.append(e)
        answers = list(encoded)
        todo = [i for i, item in enumerate(encoded) if not isinstance(item, ImageError)]
        if not todo:
            return answers
        try:
            for i, answer in zip(todo, call([encoded[i] for i in todo])):
                answers[i] = answer
        except ImageError:
            # The model refused the batch for one photo: one by one, so only it fails
            # (with on_error="raise", the first refused photo's error is raised).
            for i in todo:
                try:
                    answers[i] = call([encoded[i]])[0]
                except ImageError as e:
                    if on_error == RAISE:
                        raise
                    answers[i] = e
        return answers

    def close(self):
        self._backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        info = self.info
        return f"FaceAnalyzer({info.backend}: {info.source})"
