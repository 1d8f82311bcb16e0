"""Core of the image-classifier maker: dataset ingestion, preprocessing, VGG16 transfer learning, runs.

Plain Python with no user-interface code; the Streamlit pages and the command line (``python -m core``)
are two faces on it. Importing ``core`` is cheap: TensorFlow loads only when a model is built or loaded.
"""

import os

# TensorFlow's C++ start-up chatter (CUDA probes, CPU feature notes) means nothing to a user.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from core.errors import UserError

__all__ = ["UserError"]
