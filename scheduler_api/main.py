"""`uvicorn scheduler_api.main:app`: the one module that builds the app at import, from the environment."""

from scheduler_api.api import create_app
from scheduler_api.settings import load_settings

app = create_app(load_settings())
