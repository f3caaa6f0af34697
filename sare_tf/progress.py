"""How long library work shows its progress: one text bar, drawn only when the caller asks.

Library functions take `progress: bool` (the commands pass `not --quiet`) and report through a
`ProgressBar`; a disabled bar does nothing, so the code that reports needs no branches. The bar
is written to stderr, keeping stdout for results: redrawn in place on a terminal, one line per
tenth of the work otherwise (a log file gets a few lines, not thousands).
"""

from __future__ import annotations

import math
import sys
import time

BAR_WIDTH = 24
REDRAW_SECONDS = 0.1
_shown = True  # the command line's --quiet turns every bar off (`show_progress_bars`)


def show_progress_bars(shown: bool) -> None:
    """Turns every progress bar of this process on or off (the command line's `--quiet`)."""
    global _shown
    _shown = bool(shown)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, OSError, ValueError):  # no such method, or a closed stream
        return False


def _plural(unit: str) -> str:
    if unit.endswith("y") and unit[-2:-1] not in ("a", "e", "i", "o", "u"):
        return unit[:-1] + "ies"
    return unit + "s"


class ProgressBar:
    """`done/total` of a long loop, with rate and time left.

    Args:
        total: how many units the work has.
        unit: what a unit is ("image", "query"), for the text.
        enabled: draw the bar (False: every call does nothing).
        stream: where to write (default: `sys.stderr` as it is at the first update).

    Example:
        >>> bar = ProgressBar(3, "image", enabled=False)
        >>> bar.add(2); bar.done
        2
    """

    def __init__(self, total: int, unit: str = "item", enabled: bool = True, stream=None):
        self.total = max(int(total), 0)
        self.unit = unit
        self.enabled = bool(enabled) and _shown and self.total > 0
        self.done = 0
        self._stream = stream
        self._interactive = None
        self._start = time.perf_counter()
        self._last_draw = -math.inf
        self._tenths_written = 0
        self._finished = False

    def add(self, count: int) -> None:
        """`count` more units done."""
        self.update(self.done + int(count))

    def update(self, done: int) -> None:
        """`done` units done in all."""
        self.done = min(max(int(done), 0), self.total)
        if not self.enabled or self._finished:
            return
        if self._interactive is None:  # the stream is looked at once, at the first update
            self._stream = self._stream or sys.stderr
            self._interactive = _is_terminal(self._stream)
        stream = self._stream
        finished = self.done >= self.total
        now = time.perf_counter()
        if self._interactive:
            if not finished and now - self._last_draw < REDRAW_SECONDS:
                return
            text = "\r" + self.text(now) + ("\n" if finished else "")
        else:
            tenths = 10 * self.done // self.total
            if tenths <= self._tenths_written and not finished:
                return
            self._tenths_written = tenths
            text = self.text(now) + "\n"
        self._last_draw, self._finished = now, finished
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):  # a closed or broken stream must not stop the work
            self.enabled = False

    def text(self, now: float | None = None) -> str:
        """The bar as one line: `[=====>      ] 120/400 images  30%  12.5 images/s  ETA 22 s`."""
        elapsed = (time.perf_counter() if now is None else now) - self._start
        share = self.done / self.total if self.total else 1.0
        filled = int(BAR_WIDTH * share)
        arrow = ">" if filled < BAR_WIDTH else ""
        bar = "=" * filled + arrow + " " * (BAR_WIDTH - filled - len(arrow))
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if self.done >= self.total:
            tail = f"{_duration(elapsed)}"
        elif rate > 0:
            tail = f"ETA {_duration((self.total - self.done) / rate)}"
        else:
            tail = "ETA ?"
        return (
            f"[{bar}] {self.done}/{self.total} {_plural(self.unit)} {100 * share:3.0f}%  "
            f"{rate:.1f} {_plural(self.unit)}/s  {tail}"
        )
