"""``ctx.ai.stream_text(...)``: text deltas as they arrive, one ledger row when it ends.

The row is written exactly once: when the stream is exhausted (with the provider's usage),
when it fails, or when the caller abandons it (``close()``, leaving a ``with`` block, or
dropping the last reference). An abandoned stream has no usage report, so its row has no
tokens and an unknown cost, and says so.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from types import TracebackType

from airflow_workflow_engine.ai.providers.base import ProviderResponse, StreamChunk
from airflow_workflow_engine.ai.results import TextResult

__all__ = ["StreamEnd", "TextStream"]

#: ``end(final_response_or_None, text_so_far, error_or_None)`` -> the result, if complete.
StreamEnd = Callable[[ProviderResponse | None, str, BaseException | None], TextResult | None]


class TextStream(Iterator[str]):
    """Iterate for text deltas; afterwards ``result`` holds the whole answer with its usage
    and cost. Use it in a ``with`` block to close it early and deterministically."""

    def __init__(self, chunks: Iterator[StreamChunk], end: StreamEnd) -> None:
        self._chunks = chunks
        self._end = end
        self._parts: list[str] = []
        self._final: ProviderResponse | None = None
        self._result: TextResult | None = None
        self._done = False
        self._lock = threading.Lock()

    @property
    def text(self) -> str:
        """The text received so far."""
        return "".join(self._parts)

    @property
    def result(self) -> TextResult | None:
        """The complete answer, once the stream was read to its end (else ``None``)."""
        return self._result

    @property
    def done(self) -> bool:
        return self._done

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> str:
        if self._done:
            raise StopIteration
        try:
            while True:
                chunk = next(self._chunks)
                if chunk.final is not None:
                    self._final = chunk.final
                if chunk.delta:
                    self._parts.append(chunk.delta)
                    return chunk.delta
        except StopIteration:
            self._finish(None)
            raise
        except BaseException as exc:
            self._finish(exc)
            raise

    def read(self) -> TextResult:
        """Reads the rest of the stream and returns the complete result."""
        for _ in self:
            pass
        assert self._result is not None
        return self._result

    def close(self) -> None:
        """Stops reading (the connection is closed) and records the call if not yet done."""
        if self._done:
            return
        close = getattr(self._chunks, "close", None)
        try:
            if callable(close):
                close()
        finally:
            self._finish(None)

    def _finish(self, error: BaseException | None) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        self._result = self._end(self._final, self.text, error)

    def __enter__(self) -> TextStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # a finaliser must not raise
            self.close()
