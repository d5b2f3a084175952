"""rlhfkit: align language models with human preferences on your own machine."""

__version__ = "0.1.0"
