"""Split a long text into pieces that fit a token budget, at paragraph then sentence breaks."""

from __future__ import annotations

import re

from appliance.inference.router import estimate_tokens

_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def chunk_text(text: str, max_tokens: int) -> list[str]:
    """Pieces of `text`, each within `max_tokens` (estimated), in order, none empty."""
    if max_tokens <= 0:
        raise ValueError("max_tokens must be positive")
    if estimate_tokens(text) <= max_tokens:
        return [text]
    units: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        if estimate_tokens(paragraph) <= max_tokens:
            units.append(paragraph)
            continue
        for sentence in _SENTENCE.split(paragraph):
            while estimate_tokens(sentence) > max_tokens:
                # A "sentence" longer than the budget: cut it by characters.
                cut = max_tokens * 3 - 3
                units.append(sentence[:cut])
                sentence = sentence[cut:]
            units.append(sentence)
    chunks: list[str] = []
    current = ""
    for unit in (u.strip() for u in units):
        if not unit:
            continue
        candidate = f"{current}\n\n{unit}" if current else unit
        if estimate_tokens(candidate) <= max_tokens:
            current = candidate
        else:
            if current:
                chunks.append(current)
            current = unit
    if current:
        chunks.append(current)
    return chunks
