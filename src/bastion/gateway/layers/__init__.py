"""One folder per layer: ``config.py`` (pydantic model) and ``layer.py`` (the step)."""
