"""What the server keeps for everyone: the SQLite database (``db``), saved datasets (``records``, ``datasets``,
``space``) and their immutable versions (``versions``, ``manifests``), label decisions (``decisions``), runs
(``runs``), the one access rule (``access``), demo links (``share``), saved form settings (``forms``) and session
folders (``folders``).

May import ``core.data``, ``core.imaging``, ``core.config``, ``core.settings`` and ``core.util``; never TensorFlow.
Every function here that changes state asks ``access`` first.
"""
