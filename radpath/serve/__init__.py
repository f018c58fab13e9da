"""The radpath web server (FastAPI) and its viewer. Needs ``fastapi``, ``uvicorn`` and
``python-multipart``; ``import radpath`` never imports this package."""

from radpath.serve.app import create_app
from radpath.serve.limits import Limits

__all__ = ["Limits", "create_app"]
