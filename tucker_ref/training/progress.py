"""A one-line progress display on stderr (carriage return, no external dependency)."""

from __future__ import annotations

import sys


class ProgressLine:
    """Redraws one line: ``[#####.....] 31/64 <text>``.

    Parameters
    ----------
    total : int
        Number of units (steps) the bar spans; the fill is ``done / total``.
    stream : file, default ``sys.stderr``
    enabled : bool
        ``False`` turns every call into a no-op (``--quiet``, tests).
    width : int
        Number of bar cells.

    :meth:`update` pads the line to the longest one drawn so far, so a shorter line fully
    overwrites a longer one; :meth:`finish` ends it with a newline.
    """

    def __init__(self, total: int, *, stream=None, enabled: bool = True, width: int = 24):
        self.total = max(int(total), 1)
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled
        self.width = width
        self._longest = 0
        self._open = False

    def update(self, done: int, text: str = "") -> None:
        if not self.enabled:
            return
        filled = min(self.width, self.width * max(done, 0) // self.total)
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total} {text}"
        self._longest = max(self._longest, len(line))
        self.stream.write("\r" + line.ljust(self._longest))
        self.stream.flush()
        self._open = True

    def finish(self, text: str | None = None) -> None:
        """End the current line (optionally replacing it by ``text``)."""
        if not self.enabled:
            return
        if text is not None:
            self.stream.write("\r" + text.ljust(self._longest))
        if self._open or text is not None:
            self.stream.write("\n")
            self.stream.flush()
        self._open = False
        self._longest = 0
