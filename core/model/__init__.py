"""The network: the backbone table (``backbones``, ``blocks``), VGG16's layer table and ImageNet weights without
TensorFlow (``vgg16``), fetching and loading weights (``weights``), building, freezing and compiling (``build``),
the TensorFlow half of preprocessing (``geometry``, ``inputs``), loading a run and answering (``predict``),
calibration (``calibration``), "none of these" (``ood``), devices (``distribute``) and the quiet TensorFlow import
(``backend``).

May import ``core.workspace`` and everything below it. TensorFlow is imported at module level from this layer up;
a page imports ``core.model.predict`` only where a model must answer.
"""
