"""tap-cliniko without its first request alone: a yardstick for section 8, never shipped.

The tap sends its first request alone (`FirstAnswer` in tap_cliniko/concurrency.py), so that
a wrong key, shard or host costs one request. Here every request is sent as soon as a slot
is free, the first one included; everything else is the tap as it is (its `main`). Run by
`dev.py bench --scenario small-syncs` (benchmarks/small.py) as `tap spec`, to measure what
that guarantee costs a small sync.
"""

from __future__ import annotations

from tap_cliniko.concurrency import FirstAnswer
from tap_cliniko.tap import main


def take_turn(self: FirstAnswer) -> bool:
    """The first request still reports Cliniko's first answer; no request waits for it."""
    with self._changed:
        if self._verdict is not None:
            raise type(self._verdict)(*self._verdict.args) from None
        if self.answered or self._asking:
            return False
        self._asking = True
        return True


FirstAnswer.take_turn = take_turn  # type: ignore[method-assign]

if __name__ == "__main__":
    main()
