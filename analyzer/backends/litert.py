"""LiteRT files: the age model (`export.export_litert`) and the face networks
(`export.export_litert_faces`) on the `ai_edge_litert` runtime.

Crops: the pixels of `agegender.preprocessing.model_input` (the function the SavedModel's
serving_default runs) through the .tflite age model, its raw outputs turned into the
signature's outputs by `agegender.heads` with the spec stored in the file's metadata.

Photos: the MTCNN cascade of `faces.detector` with its three networks swapped for the
LiteRT files (PNet, RNet, ONet called through `tf.numpy_function`), so the pyramid,
suppression, calibration and alignment arithmetic is the served detector's; then the
aligned crops through the age model. The face networks are looked for in `faces_dir`
(default: the age file's directory), as `export.export_litert_faces` writes them
(pnet/rnet/onet.tflite + faces.json). The glue runs on TensorFlow; the networks on LiteRT.
"""
import json
import os
import threading

import numpy as np
import tensorflow as tf

from agegender import heads, inference, photo_answers, preprocessing
from agegender import serving_contract as contract
from agegender.errors import ModelLoadError
from agegender.results import ModelInfo
from analyzer.backends.saved_model import refusal
from faces import photo_predictor

FACES_METADATA = "faces.json"  # export.export_litert_faces.METADATA_FILE


class LiteRTAgeModel:
    """The age .tflite: encoded crops (or pixels) -> the serving_default outputs (NumPy)."""

    def __init__(self, path, num_threads=None, max_image_pixels=None):
        from export import litert_metadata
        from export.errors import ExportError
        from export.litert_model import LiteRTModel

        if not tf.io.gfile.exists(path):
            raise ModelLoadError(f"model {path!r} does not exist")
        try:
            self._model = LiteRTModel(path, num_threads=num_threads)
            metadata = litert_metadata.read_metadata(self._model.content)
        except (ExportError, ValueError, RuntimeError) as e:
            raise ModelLoadError(f"{path}: not a usable LiteRT model ({e})") from None
        if metadata is None:
            raise ModelLoadError(f"{path} carries no agegender metadata: export it with "
                                 "`python -m export.export_litert`")
        self.path = path
        self.metadata = metadata
        self.spec = litert_metadata.spec_from_metadata(metadata)
        limits = () if max_image_pixels is None else (max_image_pixels,)
        # The pixels of serving_default, decoded and resized in one graph.
        self._pixels = tf.function(
            lambda b: preprocessing.model_input_batch(b, self.spec.img_dim, *limits),
            input_signature=[tf.TensorSpec([None], tf.string)])

    def pixels_outputs(self, pixels):
        """float pixels [N, S, S, 3] (0..255) -> {output: ndarray}."""
        # The forward pass every path uses (test-time flip when the spec says so).
        raw = inference.raw_outputs(lambda x, training=False: self._model(np.asarray(x)),
                                    tf.constant(pixels, tf.float32), self.spec)
        return {k: v.numpy() for k, v in heads.serving_outputs(raw, self.spec).items()}

    def __call__(self, encoded):
        """{output: ndarray} for encoded images; raises tf.errors.InvalidArgumentError."""
        return self.pixels_outputs(self._pixels(tf.constant(encoded, tf.string)).numpy())


def _lite_network(network, outputs, shapes, batched):
    """A LiteRT face network as `faces.detector` calls the TF one: a tensor in, a tuple of
    float32 tensors of `shapes` out. `batched` (RNet, ONet): an empty batch is answered
    without a call, as the TF networks' guard does (the files need N >= 1). One call at a
    time: the graph may run pyramid levels side by side, and an interpreter is not
    thread-safe."""
    lock = threading.Lock()

    def run(x):
        if batched and x.shape[0] == 0:
            return tuple(np.zeros([0, *shape[1:]], np.float32) for shape in shapes)
        with lock:
            answer = network(x)
        return tuple(np.asarray(answer[name], np.float32) for name in outputs)

    def call(x):
        results = tf.numpy_function(run, [x], [tf.float32] * len(outputs), stateful=False)
        for tensor, shape in zip(results, shapes):
            tensor.set_shape(shape)
        return tuple(results)
    return call


def _detector(faces_dir, max_pixels):
    """A `faces.detector.FaceDetector` whose networks are the LiteRT files of `faces_dir`."""
    from export import export_litert_faces as elf
    from export.errors import ExportError
    from faces import detector as detector_lib
    from faces import networks

    try:
        with open(os.path.join(faces_dir, elf.METADATA_FILE), encoding="utf-8") as f:
            metadata = json.load(f)
        lite = {}
        for name, file_name in elf.FILES.items():
            with open(os.path.join(faces_dir, file_name), "rb") as f:
                lite[name] = elf.LiteRTNetwork(f.read())
        parameters = dict(metadata["cascade"]["parameters"])
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, ExportError) as e:
        raise ModelLoadError(f"{faces_dir}: not the LiteRT face networks of "
                             f"`python -m export.export_litert_faces` ({e})") from None
    # What the SavedModel's predict_photo uses (faces.photo_predictor).
    parameters.update(max_faces=contract.DEFAULT_MAX_FACES,
                      min_face_size=photo_predictor.DEFAULT_MIN_FACE_SIZE)

    class LiteRTFaceDetector(detector_lib.FaceDetector):
        def __init__(self):
            tf.Module.__init__(self, name="litert_face_detector")
            self.config = detector_lib.DetectorConfig(**parameters)
            self._max_pixels = max_pixels
            self.pnet = _lite_network(lite[networks.PNET], (elf.PROBABILITY, elf.OFFSETS),
                                      ([1, None, None], [1, None, None, 4]), batched=False)
            self.rnet = _lite_network(lite[networks.RNET], (elf.PROBABILITY, elf.OFFSETS),
                                      ([None], [None, 4]), batched=True)
            self.onet = _lite_network(lite[networks.ONET],
                                      (elf.PROBABILITY, elf.OFFSETS, elf.LANDMARKS),
                                      ([None], [None, 4], [None, 10]), batched=True)

    return LiteRTFaceDetector(), metadata


class LiteRTBackend:
    def __init__(self, path, *, faces_dir=None, num_threads=None, max_image_pixels):
        self.age = LiteRTAgeModel(path, num_threads, max_image_pixels)
        self._max_pixels = max_image_pixels
        default_dir = os.path.dirname(os.path.abspath(path))
        if faces_dir is None and os.path.isfile(os.path.join(default_dir, FACES_METADATA)):
            faces_dir = default_dir
        self._faces_dir = faces_dir
        self._faces = None
        if faces_dir is not None:
            self._load_faces()
        self.info = ModelInfo(
            backend="litert", source=path, image_size=self.age.spec.img_dim,
            signatures=((contract.PREDICT_PHOTO,) if faces_dir is not None else ())
            + (contract.SERVING_DEFAULT,))

    def _load_faces(self):
        from faces import photo as photo_lib

        detector, _ = _detector(self._faces_dir, self._max_pixels)
        self._faces = photo_lib.PhotoFaces(
            self.age.spec.img_dim, detector=detector,
            template=photo_predictor.template_points(self.age.spec), max_pixels=self._max_pixels)

    def photos(self, encoded):
        if self._faces is None:
            raise ModelLoadError(
                f"{self.age.path}: photos need the LiteRT face networks (`python -m "
                "export.export_litert_faces --output_dir=DIR`, then faces_dir=DIR)")
        return [self._photo(data) for data in encoded]

    def _photo(self, data):
        try:
            found = self._faces.faces_bytes(tf.constant(data))
        except tf.errors.InvalidArgumentError as e:
            raise refusal(e) from None
        n = int(found["num_faces"])
        outputs = {contract.NUM_FACES: np.array([n]),
                   contract.BOXES: found["boxes"].numpy()[None],
                   contract.LANDMARKS: found["landmarks"].numpy()[None],
                   contract.FACE_SCORES: found["scores"].numpy()[None]}
        if n:
            for name, values in self.age.pixels_outputs(found["crops"].numpy()).items():
                outputs[name] = values[None]
        else:
            outputs[contract.AGE] = np.zeros((1, 0), np.float32)
        return photo_answers.read_photos(outputs)[0].faces

    def crops(self, encoded):
        try:
            return photo_answers.read_crops(self.age(encoded))
        except tf.errors.InvalidArgumentError as e:
            raise refusal(e) from None

    def close(self):
        pass
