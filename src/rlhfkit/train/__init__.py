"""Training loops: the reward model (`reward`), RL (`rl`, `ppo`, `grpo`; `methods` maps a
method name to its config and trainer)."""

METHODS = ("ppo", "grpo", "rloo")
"""The RL methods, by the name `method=` takes."""
