"""Progress of a long conversion on a terminal: tracing, lowering N equations, passes, compiling.

Shown only when stderr is a terminal (so logs and CI output stay clean), unless asked for;
`progress=False` or JAXPR2SOFIE_QUIET=1 silences it.
"""
from __future__ import annotations

import os
import sys
import time

_BAR = 24


class Progress:
    def __init__(self, enabled: bool | None = None, stream=None):
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            enabled = (os.environ.get("JAXPR2SOFIE_QUIET", "") not in ("1", "true", "yes")
                       and getattr(self.stream, "isatty", lambda: False)())
        self.enabled = bool(enabled)
        self._shown = -1
        self._t0 = time.perf_counter()
        self._open = False

    def _write(self, text: str) -> None:
        # On a terminal the line is redrawn in place; elsewhere each step is its own line.
        tty = getattr(self.stream, "isatty", lambda: False)()
        self.stream.write(("\r\033[K" if tty else "") + text + ("" if tty else "\n"))
        self.stream.flush()
        self._open = tty

    def stage(self, text: str) -> None:
        if self.enabled:
            self._write(f"jaxpr2sofie: {text} ...")
            self._shown = -1

    def count(self, what: str, i: int, n: int) -> None:
        """`i` of `n` done; redrawn at most once per percent."""
        if not self.enabled or n <= 0:
            return
        pct = 100 * i // n
        if pct == self._shown:
            return
        self._shown = pct
        filled = _BAR * i // n
        self._write(f"jaxpr2sofie: {what} [{'#' * filled}{'.' * (_BAR - filled)}] {i}/{n}")

    def done(self, text: str = "done") -> None:
        if self.enabled:
            self._write(f"jaxpr2sofie: {text} in {time.perf_counter() - self._t0:.1f} s")
            if self._open:
                self.stream.write("\n")
                self.stream.flush()
            self._open = False
