"""Per-stream inboxes between a source thread and the detection batcher.

Files never drop: ``FileInbox`` blocks the source when full. Live sources drop at the door:
``LiveInbox`` keeps only the newest frame and counts every replaced one.
"""

from __future__ import annotations

import threading

from stream.pipeline.channels import Channel, LatestSlot
from stream.pipeline.messages import EndOfStream
from stream.types import Frame

Item = Frame | EndOfStream


class FileInbox:
    live = False

    def __init__(self, stream_id: str, capacity: int = 16) -> None:
        self.stream_id = stream_id
        self._channel: Channel[Item] = Channel(capacity, f"inbox:{stream_id}")
        self.dropped = 0

    def offer(self, frame: Frame, stop: threading.Event) -> None:
        self._channel.put(frame, stop)

    def close(self, stop: threading.Event) -> None:
        self._channel.put(EndOfStream(self.stream_id), stop)

    def take(self) -> Item | None:
        return self._channel.get_nowait()

    def depth(self) -> int:
        return self._channel.depth()


class LiveInbox:
    live = True

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        self._slot: LatestSlot[Frame] = LatestSlot(f"inbox:{stream_id}")
        self._end_taken = False

    def offer(self, frame: Frame, stop: threading.Event) -> None:
        self._slot.put(frame)

    def close(self, stop: threading.Event) -> None:
        self._slot.close()

    def take(self) -> Item | None:
        frame = self._slot.get_nowait()
        if frame is not None:
            return frame
        if self._slot.closed and not self._end_taken:
            self._end_taken = True
            return EndOfStream(self.stream_id)
        return None

    @property
    def dropped(self) -> int:
        return self._slot.dropped

    def depth(self) -> int:
        return self._slot.depth()


Inbox = FileInbox | LiveInbox
