"""Each export run in its own runtime, as whoever receives it would: ``tf.saved_model.load``, the LiteRT interpreter
(``ai-edge-litert``), ``onnxruntime``; every one answers ``(n, size, size, 3)`` uint8 squares with probabilities, and
with the "none of these" scores of a run that has them (``core.publish.formats``).

    probs, scores = batched(OnnxRuntime(path), squares)   # scores: None for an export without "none of these"
    rt = open_runtime("litert-int8", bundle / "model_int8.tflite", threads=1)
    times = timings(rt, squares[:1])                      # seconds per call, after a warm-up

This is the one module that reads what a runtime answers: each runtime's ``outputs`` (and the SavedModel's
``from_bytes``/``from_pixels``) picks the probabilities and the score out of its outputs, by name
(``none_of_these_score``; LiteRT's names are in its signature, which lists the score first), dequantised where a
LiteRT output is integer, the score None for an export that has none; calling a runtime gives the probabilities
alone. The parity check and the deployment report (``core.publish.export``, ``core.publish.measure``) only call
them. LiteRT and onnxruntime take their thread count per interpreter or session; TensorFlow fixes its thread pools
when it starts, so a SavedModel on one thread is timed in a fresh process (``python -m core.publish.measure``), and
in this process on TensorFlow's own default (every core).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from core.model import backend  # noqa: F401  (quiet TensorFlow import, before keras)

# isort: split
import numpy as np
import tensorflow as tf

from core.publish.bundles import PROBABILITIES, SCORE

BATCH = 16  # images per call of a runtime
WARMUP = 3  # calls before timing: the first ones allocate and plan
RUNS = 20  # timed calls


def all_threads() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


Outputs = tuple[np.ndarray, np.ndarray | None]  # (probabilities, "none of these" scores or None)


def _dequantised(array: np.ndarray, details: dict) -> np.ndarray:
    """A LiteRT output as float32: an integer one (full-integer quantisation) through its scale and zero point."""
    scale, zero = details.get("quantization", (0.0, 0))
    if np.issubdtype(array.dtype, np.integer) and scale:
        return ((array.astype(np.float32) - zero) * scale).astype(np.float32)
    return np.asarray(array, np.float32)


class SavedModelRuntime:
    def __init__(self, path: Path):
        self.loaded = tf.saved_model.load(str(path))

    @staticmethod
    def _read(out: dict) -> Outputs:
        score = out.get(SCORE)
        return out[PROBABILITIES].numpy(), None if score is None else score.numpy()

    def from_bytes(self, data: Sequence[bytes]) -> Outputs:
        fn = self.loaded.signatures["serving_default"]
        return _joined([self._read(fn(images=tf.constant(list(data[i : i + BATCH]))))
                        for i in range(0, len(data), BATCH)])  # fmt: skip

    def from_pixels(self, images: Sequence[np.ndarray]) -> Outputs:
        """Decoded RGB images of any sizes, one call each (the ``pixels`` signature)."""
        fn = self.loaded.signatures["pixels"]
        return _joined([self._read(fn(pixels=tf.constant(pixels[None]))) for pixels in images])

    def outputs(self, squares: np.ndarray) -> Outputs:
        """The model alone (the ``square`` signature), as LiteRT and ONNX are given it."""
        return self._read(self.loaded.signatures["square"](square=tf.constant(squares)))

    def __call__(self, squares: np.ndarray) -> np.ndarray:
        return self.outputs(squares)[0]


class LiteRTRuntime:
    def __init__(self, path: Path, threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self.threads = threads or all_threads()  # the interpreter's own default is one
        self.interpreter = Interpreter(model_path=str(path), num_threads=self.threads)
        self.input = self.interpreter.get_input_details()[0]["index"]
        # By the names in the signature (a run's two outputs: "probabilities" and SCORE, the score listed first);
        # a file with one output has only the probabilities.
        named = self.interpreter.get_signature_runner().get_output_details() if self._signed() else {}
        details = self.interpreter.get_output_details()
        self.probs = named.get(PROBABILITIES) or next(d for d in details if len(d["shape"]) == 2)
        self.score = named.get(SCORE) or next((d for d in details if len(d["shape"]) == 1), None)
        self.batch = 0

    def _signed(self) -> bool:
        return len(self.interpreter.get_signature_list()) == 1

    def outputs(self, squares: np.ndarray) -> Outputs:
        if len(squares) != self.batch:
            self.interpreter.resize_tensor_input(self.input, list(squares.shape))
            self.interpreter.allocate_tensors()
            self.batch = len(squares)
        self.interpreter.set_tensor(self.input, squares)
        self.interpreter.invoke()
        probs = _dequantised(self.interpreter.get_tensor(self.probs["index"]), self.probs)
        if self.score is None:
            return probs, None
        return probs, _dequantised(self.interpreter.get_tensor(self.score["index"]), self.score)

    def __call__(self, squares: np.ndarray) -> np.ndarray:
        return self.outputs(squares)[0]  # float32 probabilities, also from int8


class OnnxRuntime:
    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime

        self.threads = threads or all_threads()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = self.threads, 1
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        names = [o.name for o in self.session.get_outputs()]  # a run's two: PROBABILITIES, then SCORE
        self.names = [n for n in names if n != SCORE][:1] + [n for n in names if n == SCORE]

    def outputs(self, squares: np.ndarray) -> Outputs:
        out = self.session.run(self.names, {self.input: squares})
        return out[0], out[1] if len(out) > 1 else None

    def __call__(self, squares: np.ndarray) -> np.ndarray:
        return self.outputs(squares)[0]


def open_runtime(fmt: str, path: Path, threads: int | None = None) -> SavedModelRuntime | LiteRTRuntime | OnnxRuntime:
    """The export of ``fmt`` (a name of ``core.publish.bundles.FORMATS``) loaded in its runtime, answering squares:
    called, the probabilities; ``.outputs(squares)``, the probabilities and the "none of these" scores (None: the
    export has none).

    ``threads`` (LiteRT, ONNX): None is every core; a SavedModel runs on this process's TensorFlow pools.
    """
    if fmt == "saved_model":
        return SavedModelRuntime(path)
    if fmt.startswith("litert"):
        return LiteRTRuntime(path, threads)
    if fmt == "onnx":
        return OnnxRuntime(path, threads)
    raise ValueError(f"fmt must be one of saved_model, litert*, onnx. Received: fmt={fmt!r}")


def _joined(parts: list[Outputs]) -> Outputs:
    probs = np.concatenate([p for p, _ in parts])
    scores = [s for _, s in parts if s is not None]
    return probs, np.concatenate(scores) if scores and len(scores) == len(parts) else None


def batched(runtime: SavedModelRuntime | LiteRTRuntime | OnnxRuntime, squares: np.ndarray) -> Outputs:
    """``runtime.outputs`` on ``BATCH`` squares at a time, joined."""
    return _joined([runtime.outputs(squares[i : i + BATCH]) for i in range(0, len(squares), BATCH)])


def timings(
    fn: Callable[[np.ndarray], np.ndarray], one: np.ndarray, runs: int = RUNS, warmup: int = WARMUP
) -> list[float]:
    """Seconds per call of ``fn(one)`` (one image: shape ``(1, size, size, 3)``), ``runs`` calls after ``warmup``."""
    for _ in range(warmup):
        fn(one)
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn(one)
        out.append(time.perf_counter() - start)
    return out
