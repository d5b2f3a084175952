"""Progress shown on the terminal: one tqdm bar per stage."""

from __future__ import annotations

import sys


def progress_bar(total: int, initial: int, desc: str, unit: str = "step", enabled: bool = True):
    """A tqdm bar that redraws often on a terminal and rarely in a log file (none at all
    when not `enabled`: the other ranks of a distributed run)."""
    from tqdm import tqdm

    return tqdm(
        disable=not enabled,
        mininterval=0.5 if sys.stderr.isatty() else 15.0,
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        dynamic_ncols=True,
    )
