"""Human feedback: a local page where people choose between two answers (`rlhfkit label`).

- `items`: the pairs to judge, from a preference-style file or from two models' answers.
- `store`: the SQLite label store (items and judgments, one transaction per judgment).
- `server`: the web page and its token-protected JSON API.
- `export`: judgments to a preference dataset and to a human column for `rlhfkit sxs`;
  counts and agreement (Cohen's kappa) per labeller.
"""
