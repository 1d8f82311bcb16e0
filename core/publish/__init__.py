"""What leaves the server: exports to other runtimes with their parity check (``export``, ``runtimes``,
``parity``), the deployment report (``measure``: latency and int8 calibration images; ``report``: the numbers and
warnings, no TensorFlow), bundles (``bundles``) and the model card (``card``: facts, figures, render).

May import ``core.evaluate`` and everything below it.
"""
