"""Scan a streamed answer without buffering all of it.

Text leaves as soon as no identifier the policy acts on can still grow over it, and never before
the full detector has seen it together with what came before it and what came after it:

- Cheap checks per chunk decide how much of the end of the unreleased text to hold back
  (`settled_end`): always the last two units (a unit is a word, or a comma or semicolon that
  follows a word), and any word that could be part of an identifier until enough text has
  followed it for its detection to be settled: a word with a digit, an address, a domain, a path
  or a code in progress (`@`, `://`, `www.`, a dot, colon, slash or underscore between letters or
  digits, an unclosed `<`), a capitalised word that is not a function word, a word on the
  given-name list, a single letter (a value spelled out), a word of a deny-list term; and
  anything the policy's own recognizer patterns (deny lists included) could still complete.
  Unicode variants (full-width digits, dashes, look-alike letters, invisible characters) are
  folded by the detector's own normaliser before these checks.
- The detector runs only when something new could be released (about once per word), over the
  unreleased text and the last `context` characters of already-released text, so that a context
  word before a value ("SSN", "phone", "Dear") counts; findings wholly inside the released part
  were acted on when it left. A finding reaching into the held suffix moves the cut before it.
- A policy recognizer pattern that cannot be analysed falls back to the fixed tail window
  (`output.stream_window`), and so does an unreleased text that grows past that window plus a
  step (a long table of numbers): the held part stays bounded.

Nothing leaves unscanned: if a scan fails, the caller stops the stream and the held text is
dropped.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import regex

from appliance.pii.detector import Finding, resolve_overlaps
from appliance.pii.normalize import clean_view
from appliance.pii.recognizers import given_names

Detect = Callable[[str], Awaitable[list[Finding]]]
Apply = Callable[[str, list[Finding]], Awaitable[str]]

HOLD_UNITS = 2
"""Units always held back: the last (perhaps unfinished) one and the one before it, so that every
word is detected with at least one whole word after it."""
SETTLE_UNITS = 4
"""Units that must follow a run of words that could be part of an identifier before it leaves
(the reach of the NER model's window and of a context word written after a value)."""
SETTLE_CHARS = 32
"""Characters that must follow a run with a digit, an address or a code before it leaves: a
context word may stand up to 16 characters after a value ("078051120 (SSN)")."""
CONTEXT_CHARS = 128
"""Released text given to the detector before the unreleased text, at least."""
KNOWN_NAMES = 64
"""Names found earlier in the answer that later mentions are matched against (the detector does
the same within one text; the stream's detector sees a window, so the scanner carries them)."""

# Words that name no one on their own: a capitalised one opens a sentence, it is not a name.
# A word that is also a given name is held all the same (the name list is checked first), and
# "will" and "may" are left out: "Will Smith", "May 3, 1990".
_FUNCTION_WORDS = """a an the and or nor but if then else so as at by for from in into of
    off on onto out over to up upon with within without about above after against along
    among around before behind below beneath beside between beyond during except inside near
    since through throughout till until unto via i me my mine myself we us our ours you your
    yours he him his she her hers it its they them their theirs this that these those there
    here what which who whom whose when where why how all any both each few more most other
    some such no not only own same than too very can could might must shall should would is
    are was were be been being am do does did done have has had having also just now yes
    please thanks thank hello hi dear note however therefore overall first second third
    finally next instead meanwhile sure certainly of course let let's it's i'm i'll i've i'd
    we're we'll you're you'll that's there's here's what's don't can't won't isn't aren't
    doesn't didn't"""
FUNCTION_WORDS = frozenset(_FUNCTION_WORDS.split())
# A month opens a date ("march 3, 1990"): held like a name, whatever its case.
_MONTHS = """january february march april may june july august september october november
    december jan feb mar apr jun jul aug sep sept oct nov dec"""
MONTHS = frozenset(_MONTHS.split())
# Titles found inside a name ("Dr. Jane Doe"): never a mention of the name on their own.
_TITLES = frozenset(["mr", "mrs", "ms", "miss", "dr", "sir", "dame", "prof", "judge", "justice"])
# A placeholder the model copied from the prompt, whole: restored for the caller, not a value.
_PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*(?:_\d+|#[0-9a-f]+)>")
# Inside a run, between two letters or digits: an e-mail address, a domain, a path, a code.
_GLUE = frozenset("@.:/_\\")
_INNER_CUT = frozenset(",;")  # never part of an address or a domain; cut before it, after a letter
_LETTERS = re.compile(r"[^\W\d_]+")
_PLAIN, _WORD, _CODE = 0, 1, 2


@dataclass(frozen=True)
class _Unit:
    start: int  # clean-view offsets
    end: int
    chunk: int


def settled_end(
    text: str,
    *,
    patterns: Sequence[Any] = (),
    deny_words: frozenset[str] = frozenset(),
    hold_units: int = HOLD_UNITS,
    settle_units: int = SETTLE_UNITS,
    settle_chars: int = SETTLE_CHARS,
) -> int:
    """The offset in `text` up to which no identifier can still grow by cheap checks (0: hold
    everything). `patterns` are compiled `regex` patterns whose partial match at the end of the
    text holds back from where it starts."""
    view = clean_view(text)
    clean = view.text
    chunks = [(m.start(), m.end()) for m in re.finditer(r"\S+", clean)]
    if not chunks:
        return 0
    units: list[_Unit] = []
    for index, (start, end) in enumerate(chunks):
        begin = chunks[index - 1][1] if index else 0  # white space leaves with the next unit
        for position in range(start + 1, end):
            if clean[position] in _INNER_CUT and clean[position - 1].isalpha():
                units.append(_Unit(begin, position, index))
                begin = position
        units.append(_Unit(begin, end, index))
    risk = [_risk(clean[start:end], deny_words) for start, end in chunks]
    last_unit = {unit.chunk: i for i, unit in enumerate(units)}
    held = [False] * len(units)
    for i in range(len(units) - 1, -1, -1):
        unit = units[i]
        kind = risk[unit.chunk]
        if i >= len(units) - hold_units:
            held[i] = True
        elif kind != _PLAIN:
            after = len(units) - 1 - last_unit[unit.chunk]
            chars_after = len(clean) - chunks[unit.chunk][1]
            next_chunk = unit.chunk + 1
            held[i] = (
                after < settle_units
                or (kind == _CODE and chars_after < settle_chars)
                # A run of such words leaves whole, once its last word is settled.
                or (
                    next_chunk < len(chunks)
                    and risk[next_chunk] != _PLAIN
                    and held[last_unit[unit.chunk] + 1]
                )
                or held[last_unit[unit.chunk]]
            )
    first_held = next((i for i, h in enumerate(held) if h), len(units))
    limit = units[first_held].start if first_held < len(units) else len(clean)
    for pattern in patterns:
        for match in pattern.finditer(clean, partial=True):
            if match.partial:
                limit = min(limit, match.start())
    # A cut only between units (never inside a word or a run).
    if limit < len(clean):
        limit = max((u.start for u in units if u.start <= limit), default=0)
    if limit <= 0:
        return 0
    return len(text) if limit >= len(clean) else view.source[limit]


def _risk(chunk: str, deny_words: frozenset[str]) -> int:
    """Whether a whitespace-free run could be (part of) an identifier, and which kind."""
    chunk = _PLACEHOLDER.sub("", chunk)
    if any(c.isdigit() for c in chunk) or "<" in chunk or "://" in chunk:
        return _CODE
    if chunk.casefold().startswith("www."):
        return _CODE
    for position in range(1, len(chunk) - 1):
        glue = chunk[position] in _GLUE and chunk[position - 1].isalnum()
        if glue and (chunk[position + 1].isalnum() or chunk[position] == "@"):
            return _CODE
    if chunk.endswith("@") or chunk.startswith("@"):
        return _CODE
    names = given_names()
    word = chunk.strip("\"'()[]{}*_.,;:!?-\u2018\u201c\u201d").replace("\u2019", "'").casefold()
    if "'" in word and word in FUNCTION_WORDS:
        return _PLAIN  # a contraction ("don't", "It's"), not a name's possessive
    for match in _LETTERS.finditer(chunk):
        letters = match.group()
        folded = letters.casefold()
        if folded in names or folded in deny_words or folded in MONTHS:
            return _WORD
        if len(letters) == 1:
            after_apostrophe = match.start() > 0 and chunk[match.start() - 1] in "'\u2019"
            if not after_apostrophe and folded not in ("a", "i"):
                return _WORD
        if any(c.isupper() for c in letters) and folded not in FUNCTION_WORDS:
            return _WORD
    return _PLAIN


def policy_patterns(recognizers: Iterable[Any]) -> tuple[list[Any], frozenset[str], bool]:
    """The compiled patterns (deny lists included) of a policy's own recognizers, the words of
    their deny-list terms, and whether every pattern could be compiled for partial matching."""
    compiled: list[Any] = []
    words: set[str] = set()
    complete = True
    for recognizer in recognizers:
        flags = getattr(recognizer, "global_regex_flags", None)
        flags = regex.DOTALL | regex.MULTILINE | regex.IGNORECASE if flags is None else flags
        for pattern in getattr(recognizer, "patterns", None) or ():
            try:
                compiled.append(regex.compile(pattern.regex, flags))
            except (regex.error, TypeError, ValueError):
                complete = False
        for term in getattr(recognizer, "deny_list", None) or ():
            words.update(w.casefold() for w in _LETTERS.findall(str(term)))
    return compiled, frozenset(words), complete


class StreamScanner:
    """Feed chunks in, get scanned and transformed text out; `finish()` flushes the tail."""

    def __init__(
        self,
        *,
        window: int,
        detect: Detect,
        apply: Apply,
        step: int = 32,
        recognizers: Iterable[Any] = (),
        context: int = CONTEXT_CHARS,
    ) -> None:
        self.window = window
        self.step = step
        self._detect = detect
        self._apply = apply
        self._pending = ""
        self._released = ""  # the end of the released text, as written: the detector's context
        self._context = max(context, 2 * window)
        self._patterns, self._deny_words, self._analysable = policy_patterns(recognizers)
        self._names: dict[str, None] = {}  # names found so far, folded (ordered, bounded)
        self._name_words: frozenset[str] = frozenset()

    async def feed(self, chunk: str) -> str:
        """Add a chunk; returns the text that is now safe to emit (often empty)."""
        if not chunk:
            return ""
        self._pending += chunk
        text = self._pending
        limit = settled_end(
            text, patterns=self._patterns, deny_words=self._deny_words | self._name_words
        )
        if not self._analysable:
            limit = min(limit, len(text) - self.window)
        if len(text) >= self.window + self.step:
            limit = max(limit, len(text) - self.window)  # the held part stays bounded
        if limit <= 0:
            return ""
        return await self._flush(limit)

    async def finish(self) -> str:
        """Scan and return whatever is still held back."""
        if not self._pending:
            return ""
        return await self._flush(len(self._pending))

    async def _flush(self, limit: int) -> str:
        text = self._pending
        context = self._left_context()
        combined = context + text
        found = await self._detect(combined)
        self._remember_names(combined, found)
        findings = []
        for finding in resolve_overlaps(found + self._mentions(combined), combined):
            start, end = finding.start - len(context), finding.end - len(context)
            if end <= 0:
                continue  # wholly in released text: acted on when it left
            # One reaching back into released text is cut at the seam: its held part is still
            # replaced.
            findings.append(Finding(finding.entity, max(0, start), end, finding.score))
        cut = limit if limit >= len(text) else safe_cut(text, findings, limit)
        if cut <= 0:
            return ""
        emitted = await self._apply(text[:cut], [f for f in findings if f.end <= cut])
        self._released = (self._released + text[:cut])[-4 * self._context :]
        self._pending = text[cut:]
        return emitted

    def _remember_names(self, text: str, findings: list[Finding]) -> None:
        for finding in findings:
            if finding.entity != "PERSON":
                continue
            words = clean_view(text[finding.start : finding.end]).text.casefold().split()
            if not words or any(c.isdigit() for w in words for c in w):
                continue
            self._names[" ".join(words)] = None
        while len(self._names) > KNOWN_NAMES:
            del self._names[next(iter(self._names))]
        self._name_words = frozenset(
            w for name in self._names for w in _LETTERS.findall(name) if len(w) >= 2
        )

    def _mentions(self, text: str) -> list[Finding]:
        """Every mention of a name found earlier in the answer: in lower case, spelled with
        look-alike or invisible characters, or by its surname alone where written as a name."""
        if not self._names:
            return []
        view = clean_view(text)
        folded = view.text.casefold()
        if len(folded) != len(view.text):
            return []  # casefolding changed the length: offsets would not line up
        spans: list[tuple[int, int]] = []
        for name in self._names:
            words = name.split()
            pattern = r"(?<!\w)" + r"\s+".join(re.escape(w) for w in words) + r"(?!\w)"
            spans += [m.span() for m in re.finditer(pattern, folded)]
            for word in words:
                token = word.strip(".,'\u2019")
                if len(token) < 3 or token in FUNCTION_WORDS or token in _TITLES:
                    continue
                pattern = r"(?<!\w)" + re.escape(token) + r"(?!\w)"
                spans += [
                    m.span() for m in re.finditer(pattern, folded) if view.text[m.start()].isupper()
                ]
        return [Finding("PERSON", *view.span_to_original(a, b), 1.0) for a, b in spans]

    def _left_context(self) -> str:
        """The last `context` characters of released text, from the start of a word."""
        if len(self._released) <= self._context:
            return self._released
        tail = self._released[-self._context :]
        space = next((i for i, c in enumerate(tail) if c.isspace()), -1)
        return tail[space + 1 :] if space != -1 else tail


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
