"""What the app knows about VGG16 without TensorFlow: the layer table of every head, and the ImageNet weights.

The web pages render in the server's own process, where importing TensorFlow costs seconds and hundreds of MB,
so this module imports neither TensorFlow nor Keras (only the standard library and ``core.config``):

    layer_table("gap", 64, num_classes=3)   # the rows core.model.build.describe_layers gives for the built model
    unfrozen_mask(len(rows), unfreeze=5)    # which of those layers train
    imagenet_problem("small-fc")            # None when the weights are cached or reachable, else one sentence
    raise offline_error(include_top=False)  # OfflineWeights: .short for a page, str() for the command line

``core.model.build`` builds the real model and takes the weights facts (URLs, checksums, cache folder) from here, so the
page's check looks exactly where the download will go.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from core import settings
from core.config import HEADS, TrainConfig
from core.util.errors import UserError

# ---------------------------------------------------------------------------------------------- layers

# Keras' VGG16: five blocks of 3x3 'same' convolutions, each block ending in a 2x2 max pooling.
BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))  # (filters, convolutions)
FC_UNITS = 4096  # VGG16's own fc1 and fc2 (the vgg-fc head)
SMALL_FC_UNITS = 256  # the tutorial's small-fc head


def _row(name: str, kind: str, shape: tuple[int, ...], params: int = 0) -> dict:
    # The shape of core.model.build.describe_layers: trainable as with every layer unfrozen, i.e. "has weights".
    return {
        "name": name,
        "type": kind,
        "output_shape": "x".join(str(d) for d in shape),
        "params": params,
        "trainable": params > 0,
    }


def _dense(name: str, inputs: int, units: int) -> dict:
    return _row(name, "Dense", (units,), inputs * units + units)


def layer_table(head: str, image_size: int, num_classes: int) -> list[dict]:
    """The layer rows of the model ``core.model.build.build_model`` makes for this head, size and class count.

    Args:
        head: one of ``core.config.HEADS``.
        image_size: the square input size in pixels (224 for vgg-fc).
        num_classes: at least 2.

    Returns:
        One dict per layer, in ``model.layers`` order: name, type, output_shape ("HxWxC"), params, trainable
        (True for every layer with weights, as when all layers are unfrozen).

    Raises:
        UserError: a size the head cannot take, as ``TrainConfig.validate`` words it.
    """
    if head not in HEADS:
        raise ValueError(f"head must be one of {', '.join(HEADS)}. Received: head={head!r}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2. Received: num_classes={num_classes}")
    TrainConfig(weights="none", head=head, image_size=image_size).validate()
    side, channels = image_size, 3
    rows = [_row("image", "InputLayer", (side, side, 3)), _row("vgg_preprocess", "VGGPreprocess", (side, side, 3))]
    for block, (filters, convs) in enumerate(BLOCKS, start=1):
        for k in range(1, convs + 1):
            params = 3 * 3 * channels * filters + filters
            rows.append(_row(f"block{block}_conv{k}", "Conv2D", (side, side, filters), params))
            channels = filters
        side //= 2  # 'valid' 2x2 pooling with stride 2 drops an odd last row and column
        rows.append(_row(f"block{block}_pool", "MaxPooling2D", (side, side, channels)))
    features = side * side * channels
    if head == "vgg-fc":
        rows += [
            _row("flatten", "Flatten", (features,)),
            _dense("fc1", features, FC_UNITS),
            _dense("fc2", FC_UNITS, FC_UNITS),
        ]
        last = FC_UNITS
    elif head == "small-fc":
        rows += [
            _row("flatten", "Flatten", (features,)),
            _dense("head_dense1", features, SMALL_FC_UNITS),
            _row("head_dropout1", "Dropout", (SMALL_FC_UNITS,)),
            _dense("head_dense2", SMALL_FC_UNITS, SMALL_FC_UNITS),
            _row("head_dropout2", "Dropout", (SMALL_FC_UNITS,)),
        ]
        last = SMALL_FC_UNITS
    else:  # gap
        rows += [_row("gap", "GlobalAveragePooling2D", (channels,)), _row("head_dropout", "Dropout", (channels,))]
        last = channels
    rows.append(_dense("predictions", last, num_classes))
    return rows


def unfrozen_mask(n_layers: int, unfreeze: int) -> list[bool]:
    """Which of ``n_layers`` layers train when the last ``unfreeze`` are unfrozen (the tutorial's count)."""
    cut = max(n_layers - unfreeze, 0)
    return [i >= cut for i in range(n_layers)]


# ---------------------------------------------------------------------------------------------- ImageNet weights

# Keras' own download addresses and checksums for VGG16's ImageNet weights, copied from keras/applications/vgg16.py
# so that checking for them needs no Keras. Keyed by include_top: only the vgg-fc head needs the top layers.
IMAGENET_URLS = {
    True: "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
    "vgg16_weights_tf_dim_ordering_tf_kernels.h5",
    False: "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
    "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
}
IMAGENET_MD5 = {True: "64373286793e3c8b2b4e3219cbf3544b", False: "6d6bbae143d832006294945121d1f1fc"}
REACH_TIMEOUT = 10.0  # seconds to wait for the download server before calling it unreachable


class OfflineWeights(UserError):
    """The ImageNet weights are not cached here and cannot be downloaded.

    ``str(exc)`` is the command line's one line, remedy included in its flags; ``short`` is the same news in one
    sentence without remedy or paths, for a page that offers its own remedies (random weights, upload a file).
    ``url`` is the file to fetch elsewhere and ``cache_dir`` the folder where Keras looks for it.
    """

    def __init__(self, url: str, cache_dir: str | os.PathLike, model: str = "VGG16"):
        self.url = url
        self.model = model
        self.cache_dir = Path(cache_dir)
        self.host = urlparse(url).hostname or url
        self.filename = Path(urlparse(url).path).name
        self.short = (
            f"The ImageNet weights for {model} could not be downloaded: this server has no connection to {self.host}."
        )
        super().__init__(
            f"{self.short} Train with --weights none, or download {url} elsewhere and pass it with "
            f"--weights FILE.h5 (or put it in {self.cache_dir})."
        )

    def __reduce__(self):  # rebuild from the two facts, not from the message (e.g. across processes)
        return type(self), (self.url, str(self.cache_dir), self.model)


def needs_top(head: str) -> bool:
    """Whether the head keeps VGG16's fully connected layers, so needs the larger weights file."""
    return head == "vgg-fc"


def imagenet_url(include_top: bool) -> str:
    return IMAGENET_URLS[include_top]


def keras_home() -> Path:
    """Keras' home folder by Keras' own rule (keras/backend/config.py), read now rather than at import.

    ``$KERAS_HOME`` when set, else ``~/.keras``, or ``/tmp/.keras`` when the user's home is not writable.
    """
    if home := settings.current().keras_home:
        return Path(os.path.expanduser(home))
    base = os.path.expanduser("~")
    if not os.access(base, os.W_OK):
        base = "/tmp"
    return Path(base) / ".keras"


def _writable(folder: Path) -> bool:
    # Keras makes its home when it is imported, so a folder that does not exist yet counts if it could be made.
    while not folder.exists():
        if folder.parent == folder:
            return False
        folder = folder.parent
    return folder.is_dir() and os.access(folder, os.W_OK)


def weights_home() -> Path:
    """The folder ``keras.utils.get_file`` keeps downloads under: Keras' home, or /tmp/.keras if that is read-only.

    ``core.model.build`` passes this folder to ``get_file`` explicitly, so the download lands where this module looks.
    """
    home = keras_home()
    if not _writable(home):  # get_file's own fallback (keras/utils/file_utils.py)
        home = Path("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()) / ".keras"
    return home


def imagenet_cache_path(include_top: bool) -> Path:
    """Where the ImageNet weights file is, once downloaded: ``<Keras home>/models/<file name>``."""
    return weights_home() / "models" / Path(urlparse(imagenet_url(include_top)).path).name


def offline_error(include_top: bool) -> OfflineWeights:
    return OfflineWeights(imagenet_url(include_top), imagenet_cache_path(include_top).parent)


def reachable(include_top: bool, timeout: float = REACH_TIMEOUT) -> bool:
    """Whether the download server answers within ``timeout`` seconds (a TCP connection, nothing downloaded)."""
    url = urlparse(imagenet_url(include_top))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout).close()
    except OSError:
        return False
    return True


def check_imagenet(include_top: bool, timeout: float = REACH_TIMEOUT) -> None:
    """Return when the weights are cached or can be downloaded; else raise ``OfflineWeights``."""
    if not imagenet_cache_path(include_top).exists() and not reachable(include_top, timeout):
        raise offline_error(include_top)


def imagenet_offline(head: str, timeout: float = REACH_TIMEOUT) -> OfflineWeights | None:
    """The ``OfflineWeights`` a run with this head would raise, or None when its ImageNet weights are available."""
    try:
        check_imagenet(needs_top(head), timeout)
    except OfflineWeights as exc:
        return exc
    return None


def imagenet_problem(head: str, timeout: float = REACH_TIMEOUT) -> str | None:
    """None when the ImageNet weights for ``head`` are cached or can be downloaded; else one sentence saying so."""
    problem = imagenet_offline(head, timeout)
    return problem.short if problem else None
