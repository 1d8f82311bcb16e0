"""Images with Pillow: decoding, EXIF, the pixel limit, thumbnails for pages (``pillow``), and the preprocessing's
facts as data (``spec``). The TensorFlow half of preprocessing is part of the model's graph: ``core.model.inputs``.

May import ``core.config``, ``core.settings`` and ``core.util``; never TensorFlow.
"""
