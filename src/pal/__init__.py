"""pal: people and coding agents working together in chat rooms."""

__version__ = "0.1.0"

__all__ = ["__version__"]
