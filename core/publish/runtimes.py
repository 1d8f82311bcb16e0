"""Each export run in its own runtime, as whoever receives it would: ``tf.saved_model.load``, the LiteRT interpreter
(``ai-edge-litert``), ``onnxruntime``; every one answers ``(n, size, size, 3)`` uint8 squares with probabilities.

    probs = batched(OnnxRuntime(path), squares)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from core.model import backend  # noqa: F401  (quiet TensorFlow import, before keras)

# isort: split
import numpy as np
import tensorflow as tf

BATCH = 16  # images per call of a runtime


class SavedModelRuntime:
    def __init__(self, path: Path):
        self.loaded = tf.saved_model.load(str(path))

    def from_bytes(self, data: Sequence[bytes]) -> np.ndarray:
        fn = self.loaded.signatures["serving_default"]
        return np.concatenate([fn(images=tf.constant(list(data[i : i + BATCH])))["probabilities"].numpy()
                               for i in range(0, len(data), BATCH)])  # fmt: skip

    def from_pixels(self, pixels: np.ndarray) -> np.ndarray:
        return self.loaded.signatures["pixels"](pixels=tf.constant(pixels[None]))["probabilities"].numpy()[0]


class LiteRTRuntime:
    def __init__(self, path: Path):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=os.cpu_count() or 1)  # default: one
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.output = self.interpreter.get_output_details()[0]["index"]
        self.batch = 0

    def __call__(self, squares: np.ndarray) -> np.ndarray:
        if len(squares) != self.batch:
            self.interpreter.resize_tensor_input(self.input, list(squares.shape))
            self.interpreter.allocate_tensors()
            self.batch = len(squares)
        self.interpreter.set_tensor(self.input, squares)
        self.interpreter.invoke()
        return np.array(self.interpreter.get_tensor(self.output))


class OnnxRuntime:
    def __init__(self, path: Path):
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, squares: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: squares})[0]


def batched(fn: Callable[[np.ndarray], np.ndarray], squares: np.ndarray) -> np.ndarray:
    return np.concatenate([fn(squares[i : i + BATCH]) for i in range(0, len(squares), BATCH)])
