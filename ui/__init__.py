"""What the pages share: session and address keys, the start of every page, the Train form, job views, charts, long
tables and galleries a page at a time.

Page scripts live in ``pages/`` and read top to bottom; the pieces they have in common live here. Like the pages,
nothing here imports TensorFlow: the web server's script runs stay light, and heavy work runs in core's jobs.
"""
