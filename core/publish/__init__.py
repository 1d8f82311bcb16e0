"""What leaves the server: exports to other runtimes with their parity check (``export``), bundles
(``bundles``) and the model card (``card``: facts, figures, render).

May import ``core.evaluate`` and everything below it.
"""
