"""Making a run: ``training`` (the phases, fitted), ``callbacks`` (progress events), ``phases`` (the two-phase
recipe and the cached-prefix rule), ``features`` and ``cache`` (the frozen layers' outputs, on disk), ``augment``,
``lrfind``, ``record`` (what a run saves), and time estimates (``pace``, ``estimates``, ``speedtest``).

May import ``core.model`` and everything below it. ``phases``, ``pace`` and ``estimates`` import no TensorFlow: the
Train page uses them.
"""
