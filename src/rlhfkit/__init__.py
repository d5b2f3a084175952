"""rlhfkit: align language models with human preferences on your own machine.

`rlhfkit.rlhf_pipeline(...)` runs the whole pipeline (the Python twin of `rlhfkit run`).
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # editors see the typed signature; at run time it is imported on first use
    from rlhfkit.pipeline.entry import rlhf_pipeline

__version__ = "0.1.0"
__all__ = ["__version__", "rlhf_pipeline"]


def __getattr__(name: str) -> Any:
    # imported on first use: `import rlhfkit` stays light (no torch)
    if name == "rlhf_pipeline":
        from rlhfkit.pipeline import rlhf_pipeline

        return rlhf_pipeline
    raise AttributeError(f"module 'rlhfkit' has no attribute {name!r}")
