"""Make your own image classifier: the Streamlit entry point (a router only)."""

from pages.common import run_app

run_app()
