"""A LiteRT age file on the maintained runtime (`ai_edge_litert`), called like the Keras model:
what the export's check, the benchmarks and the Python API's LiteRT backend run."""
import numpy as np
import tensorflow as tf

from export.errors import ExportError
from export.litert_metadata import INPUT, SIGNATURE


class LiteRTModel:
    """A LiteRT file on the maintained runtime (`ai_edge_litert`), called like the Keras
    model: pixels [N, S, S, 3] -> {raw output name: float32 [N, ...]}, one image per
    invocation (the file's batch is 1)."""

    def __init__(self, model_path=None, model_content=None, num_threads=None):
        from ai_edge_litert.interpreter import Interpreter

        if model_content is None:
            with tf.io.gfile.GFile(model_path, "rb") as f:
                model_content = f.read()
        self.content = bytes(model_content)
        self.interpreter = Interpreter(model_content=self.content, num_threads=num_threads)
        signatures = self.interpreter.get_signature_list()
        if SIGNATURE not in signatures:
            raise ExportError(f"{model_path or 'the model'} has no {SIGNATURE!r} signature "
                              f"(it has {sorted(signatures)})")
        self.runner = self.interpreter.get_signature_runner(SIGNATURE)
        inputs = self.runner.get_input_details()
        if list(inputs) != [INPUT]:
            raise ExportError(f"{model_path or 'the model'}: {SIGNATURE} takes {sorted(inputs)}, "
                              f"expected one {INPUT!r} input")
        self.input_shape = tuple(int(d) for d in inputs[INPUT]["shape"])
        self.output_names = sorted(self.runner.get_output_details())

    def __call__(self, pixels):
        rows = [self.runner(**{INPUT: np.asarray(image, np.float32)[None]})
                for image in pixels]
        return {name: np.concatenate([r[name] for r in rows]).astype(np.float32)
                for name in self.output_names}

    def io_details(self):
        """{'input' or output name: {dtype, shape}} of the signature."""
        details = {"input": self.runner.get_input_details()[INPUT],
                   **self.runner.get_output_details()}
        return {name: {"dtype": np.dtype(d["dtype"]).name,
                       "shape": [int(x) for x in d["shape"]]} for name, d in details.items()}
