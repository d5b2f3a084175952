"""Graders: a sampled answer and its dataset row in, a reward (by default in [0, 1]) out.

Grader files use the shape of OpenAI's reinforcement fine-tuning graders (`string_check`,
`text_similarity`, `python`, `score_model`, `multi`), in YAML or JSON. One protocol
serves RL training rewards and evaluation:

    with load_grader("grader.yaml") as grader:
        results = grader.grade_batch(answers, rows)  # list[GradeResult]
"""

from rlhfkit.graders.base import Grader, GradeResult, Sample
from rlhfkit.graders.load import GRADER_TYPES, load_grader

__all__ = ["GRADER_TYPES", "GradeResult", "Grader", "Sample", "load_grader"]
