"""A dataset from a zip or a folder: safe extraction (``zips``), layout, validation, report and split (``dataset``),
duplicates and leaks (``duplicates``), the built-in sample (``sample``).

May import ``core.imaging``, ``core.config``, ``core.settings`` and ``core.util``; never TensorFlow, nor the
workspace (a saved dataset gives its ``Dataset.store`` folder instead).
"""
