"""What an RL step holds between sampling and the update.

`rollout.scorers`: the reward of each sampled answer (a reward model, a grader file or a
Python function, behind one call). `rollout.experience`: the per-token tensors the update
reads (old log-probabilities, values, advantages, returns, mask). The sampled tokens
themselves are a `rlhfkit.models.policy.Rollout`, written by the policy's `sample`.
"""
