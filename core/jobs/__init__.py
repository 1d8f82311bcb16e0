"""Heavy work as jobs in the workspace database: the kinds (``kinds``, a table) and what each does (``work``), the
queue and its dispatcher (``registry``), a job's records (``store``, ``states``), running one (``runner``), finding
dead, silent and stuck ones (``recovery``), where they run (``executors``: process, thread, ray), the worker
process (``worker``, ``host``) and the speed test as a job (``probes``).

May import ``core.publish`` and everything below it. The web server imports the registry without TensorFlow: only
a job's process imports ``work`` (the kinds name their functions, resolved there).
"""
