"""Evaluation: scoring with reward models, bulk inference, side-by-side comparison."""
