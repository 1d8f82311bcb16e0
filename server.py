"""The one server: the pages and, under /api/v1, the prediction API, as one ASGI application.

python -m core serve --host 0.0.0.0 --port 8501      # what `make run` does
uvicorn server:app --port 8501                        # the same, by hand
"""

from starlette.routing import Mount
from streamlit.starlette import App

from core.api.app import PREFIX, create_app

app = App("app.py", routes=[Mount(PREFIX, app=create_app())])
