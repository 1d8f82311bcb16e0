"""The HTTP API (``/api/v1``): prediction with API keys, batched across requests; run facts; health; OpenAPI.

``app.create_app()`` is the FastAPI application; ``server.py`` (top level) mounts it in Streamlit's own ASGI app
beside the pages, and ``python -m core serve`` runs that with uvicorn. A face like the CLI: may import everything
in core below it (jobs and down); every change of state goes through ``core.workspace.access``, and every route
that reads a run through ``core.workspace.keys``. TensorFlow is imported with the first prediction.
"""
