"""Import TensorFlow once, without the start-up chatter of its C++ runtime on the user's terminal.

Modules that need TensorFlow or Keras import this first (``from core import backend``); importing ``core``
alone stays light, so the web app's first page does not wait for TensorFlow.
"""

import os
import sys

from core import settings


def _import_quietly() -> None:
    # CUDA probes and absl notes are written straight to file descriptor 2 from C++; silence it for the import.
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None
    if fd != 2:
        import tensorflow  # noqa: F401

        return
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf

        tf.config.list_physical_devices()  # device discovery prints too; do it now, quietly
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


settings.quiet_tensorflow()
_import_quietly()
