"""Core of the image-classifier maker: dataset ingestion, preprocessing, transfer learning, runs, jobs.

Plain Python with no user-interface code; the Streamlit pages and the command line (``python -m core``) are two
faces on it. Its subpackages are layers, each importing only those below it (``docs/architecture.md``, checked by
the import contracts in ``pyproject.toml``):

    util -> settings, config -> imaging -> data -> workspace -> model -> train -> evaluate -> publish -> jobs -> cli

Importing ``core`` is cheap: TensorFlow loads only when a model is built or loaded (``core.model``).
"""
