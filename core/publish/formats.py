"""The files of an export, each with its preprocessing inside: the SavedModel's signatures, LiteRT, ONNX, the steps
(preprocessing.json) and the examples beside them.

    write_savedmodel(run, bundle / "savedmodel")      # serving_default (encoded bytes), pixels, square
    write_litert(run, bundle / "model_int8.tflite", "int8", calibration_images)
    write_onnx(run, bundle / "model.onnx")
    write_steps(run, bundle)                          # preprocessing.json (+ none_of_these.json)
    write_examples(run, bundle / "examples", formats)

A run that answers "none of these" (``run.ood``: ``core.model.ood``) is exported from its two-output model
(``ood.score_model``: the same layers and weights, the score in the same forward pass), so every export says it as
the app does. The SavedModel's signatures add ``none_of_these_score`` (float32, per image) and ``none_of_these``
(bool: the score above the run's threshold) to their answer. LiteRT has two outputs named in its signature,
``probabilities`` and ``none_of_these_score`` (read them by name, ``get_signature_runner()``: the file lists the
score first); ONNX has ``probabilities`` then ``none_of_these_score``. The threshold is in preprocessing.json
(``none_of_these_threshold``) and none_of_these.json: above it, the answer is "none of these". A run that cannot say
is exported with its one output, as before.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from core.model import backend  # noqa: F401  (quiet TensorFlow import, before keras)

# isort: split
import keras
import numpy as np
import tensorflow as tf

from core.imaging import spec as preprocessing
from core.model import calibration, geometry, ood
from core.model.predict import Run
from core.publish.bundles import FILES, FLAG, PROBABILITIES, SCORE
from core.workspace import runs

NOTES = "none_of_these.json"  # in the bundle: the threshold and what it was fitted on (core.model.ood's facts)


def scoring(run: Run) -> keras.Model | None:
    """The run's model with its "none of these" score (``[probabilities, score]``), or None for a run that cannot
    say (no fitted state, one fitted for another model, or a stand-in for a run without one)."""
    state = getattr(run, "ood", None)
    return ood.score_model(run.model, state) if state is not None and ood.fits(run.model, state) else None


# ---------------------------------------------------------------------------------------------- the models


def _outputs(probs: tf.Tensor, classes: tf.Tensor, threshold: float, score: tf.Tensor | None = None,
             score_threshold: float = 0.0) -> dict[str, tf.Tensor]:  # fmt: skip
    order = tf.argsort(probs, axis=-1, direction="DESCENDING", stable=True)
    scores = tf.gather(probs, order, batch_dims=1)
    names = tf.gather(classes, order)
    out = {
        "label": names[:, 0],  # the most likely class
        "confidence": scores[:, 0],
        "sure": scores[:, 0] >= threshold,  # False: the app says "not sure" (below the run's threshold)
        "classes": names,  # every class, most likely first
        "scores": scores,
        PROBABILITIES: probs,  # in labels.txt order
    }
    if score is not None:
        out[SCORE] = score  # how unlike every class (core.model.ood)
        out[FLAG] = score > score_threshold  # True: the app says "none of these"
    return out


def write_savedmodel(run: Run, path: Path) -> None:
    """A SavedModel for TensorFlow Serving with three signatures (bytes, pixels of any size, the square input)."""
    size, resize = run.config.image_size, run.config.resize
    model, two = run.model, scoring(run)
    classes = tf.constant(run.classes)
    threshold = float(calibration.threshold_of(run.path) or 0.0)
    limit = float(run.ood.threshold) if two is not None else 0.0

    def from_square(square):
        if two is None:
            return _outputs(model(square, training=False), classes, threshold)
        probs, score = two(square, training=False)
        return _outputs(probs, classes, threshold, score, limit)

    def from_pixels(pixels):
        return from_square(geometry.square(pixels, size, resize))

    def from_bytes(encoded):
        squares = tf.map_fn(
            lambda data: geometry.square(geometry.decode(data, size), size, resize),
            encoded,
            fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8),
        )
        return from_square(squares)

    # No archive.track(model): the endpoints track the variables they use, and track() would store every weight a
    # second time (keras-team/keras#23553: twice the size on disk and in TensorFlow Serving's memory).
    archive = keras.export.ExportArchive()
    archive.add_endpoint("serving_default", from_bytes, [tf.TensorSpec([None], tf.string, name="images")])
    archive.add_endpoint("pixels", from_pixels, [tf.TensorSpec([None, None, None, 3], tf.uint8, name="pixels")])
    archive.add_endpoint("square", from_square, [tf.TensorSpec([None, size, size, 3], tf.uint8, name="square")])
    archive.write_out(str(path), verbose=False)


def write_litert(run: Run, path: Path, weights: str = "float32", calibration_images: np.ndarray | None = None) -> None:
    """A LiteRT file: ``float32``, ``float16`` weights, or ``int8``: full-integer quantisation calibrated on
    ``calibration_images`` (uint8 squares), integer ops only; uint8 in and float32 probabilities out either way
    (and the "none of these" score, named in the signature, for a run that has one)."""
    kwargs: dict = {}
    if weights == "float16":
        kwargs = {"optimizations": [tf.lite.Optimize.DEFAULT], "target_spec": {"supported_types": [tf.float16]}}
    elif weights == "int8":
        if calibration_images is None or not len(calibration_images):
            raise ValueError("calibration_images must hold at least one image for int8. Received: none")

        def dataset():
            for square in calibration_images:
                yield [square[None]]

        kwargs = {"optimizations": [tf.lite.Optimize.DEFAULT], "representative_dataset": dataset,
                  "target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]}}  # fmt: skip
    two = scoring(run)
    model = run.model
    if two is not None:  # a dict of outputs: the signature names them
        model = keras.Model(two.inputs, {PROBABILITIES: two.outputs[0], SCORE: two.outputs[1]}, name=two.name)
    model.export(str(path), format="litert", verbose=False, **kwargs)


def write_onnx(run: Run, path: Path) -> None:
    """The model as ONNX through tf2onnx, from its graph with the weights frozen in and nested functions inlined:
    Keras' own ``export(format="onnx")`` leaves constants a network captured (EfficientNetV2's normalisation) as
    inputs nobody feeds. With a "none of these" score, its outputs are renamed ``probabilities`` and
    ``none_of_these_score`` (in that order)."""
    import onnx
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    size, two = run.config.image_size, scoring(run)
    model = two if two is not None else run.model
    spec = tf.TensorSpec((None, size, size, 3), tf.uint8, name="image")
    fn = tf.function(lambda x: model(x, training=False), input_signature=[spec], autograph=False)
    frozen = convert_variables_to_constants_v2(fn.get_concrete_function(), aggressive_inlining=True)
    quiet = logging.getLogger("tf2onnx")  # an optimisation pass it skips is logged as a traceback, not a failure
    level, quiet.level = quiet.level, logging.CRITICAL
    try:
        proto = _convert(frozen.graph.as_graph_def(), [t.name for t in frozen.inputs], [t.name for t in frozen.outputs])
    finally:
        quiet.level = level
    meta = {"labels": json.dumps(run.classes), "preprocessing": "core.imaging.spec.preprocessing_spec"}
    if two is not None:
        _rename_outputs(proto.graph, [PROBABILITIES, SCORE])
        meta |= {"outputs": json.dumps([PROBABILITIES, SCORE]), "none_of_these_threshold": repr(run.ood.threshold)}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def _convert(graph_def, inputs: list[str], outputs: list[str], opset: int = 17):
    """tf2onnx's ``convert.from_graph_def``, but with its ONNX optimisation passes run on one copy of the graph.

    The library deep-copies the whole graph before each of its dozen passes on every round, so that a failing pass
    can be undone: 49 copies, 18 s of a 38 s conversion of ConvNeXt-Tiny. Here the graph is copied once, the passes
    run on it in the library's own loop without copies, and only when one fails does the library's careful loop run
    again on the copy, skipping the pass that fails as before. The file is the same either way.
    """
    import copy

    from tf2onnx import optimizer, tf_loader, tfonnx

    with tf.device("/cpu:0"), tf.Graph().as_default() as graph, tf_loader.tf_session(graph=graph) as session:
        tf.import_graph_def(graph_def, name="")
        inputs = tf_loader.inputs_without_resource(session, inputs)
        frozen = tf_loader.tf_optimize(inputs, outputs, graph_def)
    with tf.Graph().as_default() as graph:
        tf.import_graph_def(frozen, name="")
        onnx_graph = tfonnx.process_tf_graph(graph, continue_on_error=True, opset=opset, input_names=inputs,
                                             output_names=outputs)  # fmt: skip
        before = copy.deepcopy(onnx_graph)
        try:
            onnx_graph = optimizer.optimize_graph(onnx_graph, catch_errors=False)
        except Exception:  # a pass failed part-way: start again from the copy, each pass on a copy of its own
            onnx_graph = optimizer.optimize_graph(before, catch_errors=True)
        return onnx_graph.make_model("converted from a Keras model")


def _rename_outputs(graph, names: list[str]) -> None:
    """Give the graph's outputs these names, in order, wherever a node makes or reads them."""
    renames = {out.name: new for out, new in zip(graph.output, names, strict=True)}
    for node in graph.node:
        for field in (node.input, node.output):
            for i, name in enumerate(field):
                if name in renames:
                    field[i] = renames[name]
    for info in graph.value_info:
        info.name = renames.get(info.name, info.name)
    for out in graph.output:
        out.name = renames[out.name]


# ---------------------------------------------------------------------------------------------- beside them


def output_order(run: Run) -> dict[str, str]:
    """What each format answers, in order (preprocessing.json's ``outputs``)."""
    if scoring(run) is None:
        return {
            "savedmodel": "label, confidence, sure, classes, scores, probabilities (by name)",
            "litert": "one output: float32 probabilities (batch, classes) in labels.txt order",
            "onnx": "one output: float32 probabilities (batch, classes) in labels.txt order",
        }
    return {
        "savedmodel": f"label, confidence, sure, classes, scores, {PROBABILITIES}, {SCORE} (float32, per image), "
        f"{FLAG} (bool: {SCORE} > none_of_these_threshold), by name",
        "litert": f"two outputs named in the signature (get_signature_runner()): {PROBABILITIES} (float32, batch x "
        f"classes, labels.txt order) and {SCORE} (float32, per image); get_output_details() lists {SCORE} first",
        "onnx": f"two outputs, in this order: {PROBABILITIES} (float32, batch x classes, labels.txt order), "
        f"{SCORE} (float32, per image)",
    }


def write_steps(run: Run, work: Path) -> None:
    """preprocessing.json: the exact steps, where each format starts, what it answers and both thresholds; and
    for a run that answers "none of these", none_of_these.json (how its threshold was chosen)."""
    spec = preprocessing.preprocessing_spec(run.config.image_size, run.config.resize, run.config.backbone)
    two = scoring(run) is not None
    out = "float32 probabilities" + (f" and the {SCORE}" if two else "") + " out"
    spec["where"] = {
        "savedmodel": "serving_default: every step, from the encoded bytes (TensorFlow's decoder, made to give "
        "Pillow's pixels; JPEG EXIF orientation applied; WebP and TIFF are not read); pixels: from the geometry on; "
        "square: the model alone",
        "litert": "model.tflite, model_fp16.tflite, model_int8.tflite: the model alone: give it the square uint8 "
        f"image (geometry done by the caller); {out}",
        "onnx": f"the model alone: give it the square uint8 image (geometry done by the caller); {out}",
        "keras": "model.keras: the model alone, as trained (load with keras.saving.load_model, safe_mode on)",
    }
    spec["outputs"] = output_order(run)
    spec["not_sure_threshold"] = calibration.threshold_of(run.path)
    spec["none_of_these_threshold"] = float(run.ood.threshold) if two else None
    if two:
        spec["none_of_these"] = f"above none_of_these_threshold, the image is unlike every class: see {NOTES}"
        state = run.ood
        runs.write_json(work / NOTES, {
            "method": state.method, "layer": ood.LAYER, "rate": state.rate, "threshold": float(state.threshold),
            "validation_images": state.validation_images, "validation_flagged": state.validation_flagged,
            "feature_size": state.feature_size, "rule": f"{SCORE} > threshold: none of these",
            "outputs": spec["outputs"],
        })  # fmt: skip
    runs.write_json(work / "preprocessing.json", spec)


def write_examples(run: Run, folder: Path, formats: Sequence[str]) -> None:
    """examples/: a few lines per format that classify one photo, saying "none of these" where the run can."""
    folder.mkdir()
    two = scoring(run) is not None
    if "saved_model" in formats:
        _savedmodel_examples(folder, two)
    square = _square_lines(run, two)
    answer = "print('none of these' if score > threshold else labels[probs.argmax()], float(probs.max()), score)\n"
    if tflite := [FILES[f] for f in formats if f.startswith("litert")]:
        if two:
            run_it = ("out = interpreter.get_signature_runner()(image=image)  # the outputs by name\n"
                      f"probs, score = out['{PROBABILITIES}'][0], float(out['{SCORE}'][0])\n" + answer)  # fmt: skip
        else:
            run_it = (
                "interpreter.set_tensor(interpreter.get_input_details()[0]['index'], image)\n"
                "interpreter.invoke()\n"
                "probs = interpreter.get_tensor(interpreter.get_output_details()[0]['index'])[0]\n"
                "print(labels[probs.argmax()], float(probs.max()))\n"
            )
        (folder / "litert.py").write_text(
            square
            + "from ai_edge_litert.interpreter import Interpreter\n\n"
            + f"# also: {', '.join(tflite[1:])} (the same input and outputs)\n" * (len(tflite) > 1)
            + f"interpreter = Interpreter(model_path='{tflite[0]}', num_threads=4)\n"
            "interpreter.allocate_tensors()\n" + run_it
        )
    if "onnx" in formats:
        if two:
            run_it = (f"probs, score = session.run(['{PROBABILITIES}', '{SCORE}'], "
                      "{session.get_inputs()[0].name: image})\n"
                      "probs, score = probs[0], float(score[0])\n" + answer)  # fmt: skip
        else:
            run_it = (
                "probs = session.run(None, {session.get_inputs()[0].name: image})[0][0]\n"
                "print(labels[probs.argmax()], float(probs.max()))\n"
            )
        (folder / "onnx.py").write_text(
            square + "import onnxruntime\n\nsession = onnxruntime.InferenceSession('model.onnx')\n" + run_it
        )


def _square_lines(run: Run, two: bool) -> str:
    """The examples' first lines: the photo as the model's square uint8 input, the labels (and the threshold)."""
    size = run.config.image_size
    step = {
        "crop": f"ImageOps.fit(im, ({size}, {size}), Image.Resampling.BILINEAR)",
        "pad": f"ImageOps.pad(im, ({size}, {size}), Image.Resampling.BILINEAR, color={preprocessing.PAD_COLOR})",
        "stretch": f"im.resize(({size}, {size}), Image.Resampling.BILINEAR)",
    }[run.config.resize]
    square = (
        "import numpy as np\nfrom PIL import Image, ImageOps\n\n"
        f"# The model's input: {size} x {size} uint8 RGB after the run's '{run.config.resize}' (preprocessing.json).\n"
        "# Pillow's antialiased bilinear comes within a level or two of the app's resize (tf.image.resize);\n"
        "# for the app's exact pixels, use the SavedModel's 'pixels' signature or core.model.geometry.square.\n"
        "im = ImageOps.exif_transpose(Image.open('photo.jpg')).convert('RGB')\n"
        f"image = np.asarray({step}, dtype=np.uint8)[None]\n"
        "labels = open('labels.txt').read().splitlines()\n"
    )
    if not two:
        return square
    # the threshold the app uses: above it, "none of these"
    return "import json\n" + square + "threshold = json.load(open('preprocessing.json'))['none_of_these_threshold']\n"


def _savedmodel_examples(folder: Path, two: bool) -> None:
    (folder / "savedmodel.py").write_text(
        "import tensorflow as tf\n\n"
        "model = tf.saved_model.load('savedmodel')\n"
        "out = model.signatures['serving_default'](images=tf.constant([open('photo.jpg', 'rb').read()]))\n"
        "print(out['label'][0].numpy().decode(), float(out['confidence'][0]), bool(out['sure'][0]))\n"
        + (f"if bool(out['{FLAG}'][0]):  # above the run's threshold: unlike every class\n"
           f"    print('none of these', float(out['{SCORE}'][0]))\n" if two else "")
    )  # fmt: skip
    (folder / "tensorflow_serving.md").write_text(
        "# Serve with TensorFlow Serving\n\n"
        "```sh\n"
        "mkdir -p serving/classifier && cp -r savedmodel serving/classifier/1\n"
        'docker run -p 8501:8501 -v "$PWD/serving/classifier:/models/classifier" '
        "-e MODEL_NAME=classifier tensorflow/serving\n"
        "# encoded bytes go base64-encoded under the key b64\n"
        'curl -s localhost:8501/v1/models/classifier:predict -d "{\\"instances\\": '
        '[{\\"b64\\": \\"$(base64 -w0 photo.jpg)\\"}]}"\n'
        "```\n\n"
        'The answer holds `label`, `confidence`, `sure` (false: below the run\'s "not sure" threshold), '
        "`classes` and `scores` (most likely first) and `probabilities` (in `labels.txt` order)"
        + (f", `{SCORE}` and `{FLAG}` (true: the score is above the run's threshold, "
           "`none_of_these_threshold` in preprocessing.json: the image is unlike every class).\n" if two else ".\n")
    )  # fmt: skip
