"""Scan a streamed answer without buffering all of it.

The scanner holds back only a tail window (at least as long as the longest value a recognizer
should match) so that a value split across chunks is seen whole before any of it is emitted,
while the text before the window flows to the caller as the model writes. Nothing leaves
unscanned: if a scan fails, the caller stops the stream and the held text is dropped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from appliance.pii.detector import Finding

Detect = Callable[[str], Awaitable[list[Finding]]]
Apply = Callable[[str, list[Finding]], Awaitable[str]]


class StreamScanner:
    """Feed chunks in, get scanned and transformed text out; `finish()` flushes the tail."""

    def __init__(self, *, window: int, detect: Detect, apply: Apply, step: int = 32) -> None:
        self.window = window
        self.step = step
        self._detect = detect
        self._apply = apply
        self._pending = ""

    async def feed(self, chunk: str) -> str:
        """Add a chunk; returns the text that is now safe to emit (often empty)."""
        self._pending += chunk
        if len(self._pending) < self.window + self.step:
            return ""
        return await self._flush(final=False)

    async def finish(self) -> str:
        """Scan and return whatever is still held back."""
        if not self._pending:
            return ""
        return await self._flush(final=True)

    async def _flush(self, *, final: bool) -> str:
        text = self._pending
        findings = await self._detect(text)
        cut = len(text) if final else safe_cut(text, findings, len(text) - self.window)
        if cut <= 0:
            return ""
        emitted = await self._apply(text[:cut], [f for f in findings if f.end <= cut])
        self._pending = text[cut:]
        return emitted


def safe_cut(text: str, findings: list[Finding], cut: int) -> int:
    """Move `cut` left until no finding and no `<PLACEHOLDER>` token straddles it."""
    moved = True
    while moved and cut > 0:
        moved = False
        for finding in findings:
            if finding.start < cut < finding.end:
                cut, moved = finding.start, True
        opening = text.rfind("<", max(0, cut - 48), cut)
        if opening != -1 and ">" not in text[opening:cut]:
            cut, moved = opening, True
    return cut
