"""How a score is written for a reader, on the scale its file uses.

The canonical files write risk scores from 0 to 1; the original tool's files from 0 to 10.
A score is kept as the file wrote it (so that a summary saying "6.6" is checked against 6.6)
and shown on that same scale. Pure and import-free, so that clients use it too.
"""

from __future__ import annotations


def format_score(value: float, scale: float = 1.0) -> str:
    """6.6 on a 0-10 scale -> "6.6/10"; 0.487 on a 0-1 scale -> "49%".

    A 0-1 score is a percentage because a small model, given "0.487", tends to write "4.87%"
    or "48%" on its own (clinsum/prompt.py).
    """
    if scale == 10.0:
        return f"{round(value, 2):g}/10"
    return f"{value:.0%}"
