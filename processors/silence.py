"""How long a bed's device has been silent, as far as the worker that owns it can tell.

``device_silent`` counted from the wall time the worker last processed one of the bed's windows.
A worker that is behind on a partition — back from a restart or a crash, or catching up after
an InfluxDB or broker outage — has not yet processed windows that the devices did send; every
bed whose windows were still waiting behind the worker's position was "silent" for as long as the
worker had been away, and was alarmed at its first timer tick (then resolved by its next
window): a device alarm about the pipeline. So silence is measured where the worker is in
the stream: while it is behind on the bed's partition, against the newest record time it has
processed there (the broker's timestamps, one clock for the partition's producer); once it has
read everything on the partition, against the wall clock, since the worker last processed one
of the bed's windows (the worker's own clock: no producer clock skew).

`StreamClock` is pure bookkeeping; the worker feeds it from each batch and asks it on its timer,
and forgets a partition's part of it when a rebalance takes the partition away (what it knew is
stale by the time it gets the partition back: the other owner read on).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field


@dataclass
class StreamClock:
    read_ms: dict[int, int] = field(default_factory=dict)  # partition -> newest record time processed
    read_to: dict[int, int] = field(default_factory=dict)  # partition -> offset after the last processed
    bed_ms: dict[bytes, int] = field(default_factory=dict)  # bed key -> record time of its newest window processed
    seen_ms: dict[bytes, int] = field(default_factory=dict)  # bed key -> wall ms the worker last processed its window
    raised: set[bytes] = field(default_factory=set)  # beds whose device_silent this worker has raised

    def note(self, partition: int, offset: int, record_ms: int, key: bytes | None = None) -> None:
        """One processed record (its offset and broker timestamp on ``partition``); ``key``: the
        bed whose window it carried (None: a record that was no window, dead-lettered)."""
        self.read_ms[partition] = max(self.read_ms.get(partition, record_ms), record_ms)
        self.read_to[partition] = max(self.read_to.get(partition, 0), offset + 1)
        if key is not None:
            self.bed_ms[key] = max(self.bed_ms.get(key, record_ms), record_ms)

    def behind(self, partition: int, highwater: int | None, committed: int | None) -> bool | None:
        """Records wait on ``partition`` that this worker has not processed (True), it has read
        everything there (False), or it cannot tell yet (None: no fetch answered, nothing read)."""
        # the group's offset where this worker has read less (a partition it had before a
        # rebalance and got back: the other owner read on meanwhile)
        known = [o for o in (self.read_to.get(partition), committed) if o is not None]
        if highwater is None or not known:
            return None
        return highwater > max(known)

    def silent_ms(self, key: bytes, partition: int, now_ms: int, seen_ms: int, highwater: int | None,
                  committed: int | None) -> int:
        """How long bed ``key`` has been silent: ``now_ms - seen_ms`` (the wall time the worker
        last processed one of its windows) when the worker has read everything on the bed's
        partition; else how far the partition's processed records have moved past the bed's
        newest one (0 until the worker has processed something there since it started)."""
        if self.behind(partition, highwater, committed) is False:
            return now_ms - seen_ms
        read = self.read_ms.get(partition)
        if read is None:
            return 0
        return max(0, read - self.bed_ms.get(key, seen_ms))

    def forget(self, partitions: Collection[int], partition_of: Callable[[bytes], int]) -> list[bytes]:
        """``partitions`` revoked in a rebalance (``partition_of``: a bed key's frames partition)
        -> the beds on them, whose bookkeeping is dropped with the partitions'. Whoever owns them
        next processes their windows and resolves their alarms, so none of it holds if this worker
        gets them back: a wall time from before would call a bed silent that was heard meanwhile,
        a device_silent remembered as raised would keep the bed's next silence from being alarmed.
        Until the worker processes something there again, `silent_ms` is 0 while it is behind,
        then counts from the bed's stored time."""
        keys = [k for k in {*self.seen_ms, *self.raised, *self.bed_ms} if partition_of(k) in partitions]
        for p in partitions:
            self.read_ms.pop(p, None)
            self.read_to.pop(p, None)
        for k in keys:
            self.bed_ms.pop(k, None)
            self.seen_ms.pop(k, None)
            self.raised.discard(k)
        return keys
