"""`python -m rlhfkit.cli`: the `rlhfkit` command."""

from rlhfkit.cli import main

raise SystemExit(main())
