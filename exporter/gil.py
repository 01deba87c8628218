"""How soon CPython hands the GIL to a thread that waits for it: after 1 ms, not 5.

The HTTP server's event loop (`web.http_server`) lets go of the GIL at every
socket call, and each time a thread doing pure-Python work (a poll cycle
parsing answers, a render of the session part) may take it and keep it for the
whole switch interval. A scrape makes a dozen such calls, so under load it
waited up to 5 ms at each. In `bench/soak.py --hostile`, two runs each way in one
sitting, the authorised scrape p50 went from 9.9 and 7.4 ms to 6.9 and 6.7, the
p99 from 112 and 89 ms to 87 and 77. The busy threads lose a little throughput
to the extra switches.
"""

from __future__ import annotations

import sys
from typing import Final

SWITCH_INTERVAL_SECONDS: Final = 0.001  # CPython's default is 0.005


def hand_the_gil_over_sooner() -> None:
    """Set the interpreter's thread switch interval; once, at start, for the process."""
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
