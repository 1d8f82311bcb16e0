"""The command line (``python -m core``): one module per kind of work, each a table of subcommands
(``core.cli.main`` lists them). The top layer: it may import every other part of core, and nothing imports it.
"""
