"""Pure RLHF maths: losses, estimators and masked statistics. Imports only torch.

Shape legend used in every docstring and inline comment:
    B  batch (prompts, or preference pairs)
    G  group size (answers sampled per prompt)
    P  prompt length in tokens
    A  response (action) length in tokens
    T  P + A
    H  hidden size
"""
