"""The HTTP service: `create_app(model_or_detector, ServeSettings)` builds the FastAPI app (see app.py)."""

from fakelite.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]


def __getattr__(name: str):
    if name == "create_app":  # lazy: importing the settings must not pull FastAPI in
        from fakelite.serve.app import create_app

        return create_app
    raise AttributeError(name)
