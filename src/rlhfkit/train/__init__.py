"""Training loops: one module per stage."""
