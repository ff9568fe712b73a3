"""Recognizers Presidio lacks, and the ones a policy defines.

Stock Presidio (measured here) has no street-address or postcode recognizer, and spaCy's small
model misses some names or labels them ORGANIZATION ("Reply to Margaret Thornbury"), and misses
names typed in lower case. The built-ins below close those gaps with patterns and a given-name
list; a policy adds its own patterns, context words, deny-lists and checksums.
"""

from __future__ import annotations

import itertools
import re
from functools import cache
from importlib.resources import files
from typing import Any

import regex
from presidio_analyzer import EntityRecognizer, Pattern, PatternRecognizer, RecognizerResult
from presidio_analyzer.predefined_recognizers import PhoneRecognizer

from appliance.pii.checksums import luhn_valid, mod97_valid
from appliance.pii.identifiers import identifier_recognizers
from appliance.policies.schema import CustomRecognizer

__all__ = [
    "GivenNameRecognizer",
    "GroupRecognizer",
    "PersonCueRecognizer",
    "PolicyPatternRecognizer",
    "builtin_recognizers",
    "first_names",
    "given_names",
    "luhn_valid",
    "mod97_valid",
    "policy_recognizers",
]

# Presidio matches patterns case-insensitively by default; capitalisation is evidence here.
_CASE_SENSITIVE = regex.DOTALL | regex.MULTILINE
# Street words: the common USPS suffixes (Publication 28) and British ones; capitalised, or in
# lower case after a capitalised street name ("14 Elm road").
_STREET_WORDS = (
    "Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|"
    "Terrace|Terr|Close|Crescent|Cres|Square|Sq|Parkway|Pkwy|Highway|Hwy|Circle|Cir|Row|"
    "Gardens|Grove|Hill|Hills|Mews|Walk|Alley|Bend|Bluff|Bypass|Causeway|Center|Cliff|"
    "Common|Corner|Cove|Creek|Crossing|Dale|Drives|Estates|Expressway|Extension|Falls|Ferry|"
    "Field|Fields|Flats|Ford|Forest|Forge|Fork|Fort|Freeway|Garden|Gateway|Glen|Green|Harbor|"
    "Harbour|Haven|Heights|Hollow|Inlet|Island|Junction|Key|Knoll|Lake|Lakes|Landing|Loop|"
    "Mall|Manor|Meadow|Meadows|Mill|Mills|Mission|Motorway|Mount|Mountain|Orchard|Oval|Park|"
    "Pass|Path|Pike|Pine|Pines|Plain|Plains|Plaza|Point|Port|Prairie|Ranch|Rapids|Rest|Ridge|"
    "River|Route|Run|Shoal|Shore|Shores|Spring|Springs|Spur|Station|Summit|Trace|Track|Trail|"
    "Tunnel|Turnpike|Union|Valley|Via|Viaduct|View|Village|Ville|Vista|Wall|Wells|Wharf|Wood|"
    "Woods|Yard|Parade|Rise|Vale|Wynd|Gate|Approach|Broadway|Esplanade|Isle|Islands|Crest|"
    "Curve|Divide|Estate|Light|Lights|Lock|Locks|Lodge|Neck|Radial|Ramp|Rue|Skyway|Stream|"
    "Stravenue|Throughway|Trafficway|Underpass|Overpass|Canyon|Cape|Camp|Club|Course|Burg|"
    "Brook|Brooks|Branch|Bridge|Bottom|Beach|Dam|Fall|Flat|Harbors|Hollows|Hills|Mountains|"
    "Passage|Pointe|Ranches|Rows|Shoals|Spurs|Squares|Summits|Terraces|Trails|Views|Villages|"
    "Vistas|Walks|Ways|Wells"
)
_STREET_NAME = r"(?:[A-Z][A-Za-z'’.-]*\s+)"
_UNIT = (
    r"(?:,?\s+(?:Apt|Apartment|Suite|Ste|Unit|Flat|Floor|Fl|Room|Rm|Bldg|Building|#)\.?\s*"
    r"(?:[A-Za-z0-9-]*\d[A-Za-z0-9-]*|[A-Z]\b))?"
)
STREET_ADDRESS = (
    r"\b\d{1,6}[A-Za-z]?\s+(?:[NSEW]\.?\s+)?"
    rf"(?:{_STREET_NAME}{{1,4}}(?:(?:{_STREET_WORDS})s?|(?:{_STREET_WORDS.lower()})s?)|Broadway)"
    rf"\b\.?{_UNIT}"
)
PO_BOX = r"\bP\.?\s?O\.?\s+Box\s+\d{1,7}\b"
_STATES = (
    "AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|"
    "NH|NJ|NM|NY|NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY"
)
US_ZIP_AFTER_STATE = rf"\b(?:{_STATES})\s+(?P<value>\d{{5}}(?:-\d{{4}})?)\b"
US_ZIP = r"\b\d{5}(?:-\d{4})?\b"
# The last line of a postal address: "<street>, <Town>[,] [ST] 12345" (the ZIP ends it).
ZIP_AFTER_ADDRESS = (
    rf"(?:{STREET_ADDRESS}|{PO_BOX}),?\s+(?:[A-Z][A-Za-z'.-]+\s+){{0,3}}[A-Z][A-Za-z'.-]+,?"
    rf"\s+(?:[A-Z]{{2}}\s+|(?:United States|USA|U\.S\.A\.)\s+)?(?P<value>\d{{5}}(?:-\d{{4}})?)\b"
)
UK_POSTCODE = r"\b[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2}\b"
TITLES = r"(?:Mr|Mrs|Ms|Mx|Miss|Dr|Prof|Professor|Sir|Dame|Judge|Justice|Rev|Nurse)"
# The title in any case ("ms. Tómas"), the name capitalised.
TITLED_NAME = rf"\b(?i:{TITLES})\.?\s+(?P<value>\p{{Lu}}[\w'’-]+(?:\s+\p{{Lu}}[\w'’-]+)?)"
# "Smith", "McCann", "O'Brien", "DeLuca", "Smith-Jones", "Pawłowski", "Árnþórsson" (any
# alphabet's letters: these patterns compile with the `regex` module, which knows \p{Lu}).
_UP, _LOW = r"\p{Lu}", r"[\p{Ll}'’]"
# One way to match each word (an inner capital starts a second part), so a long word cannot
# make the pattern backtrack over every split of its letters.
_CAPITAL_WORD = rf"{_UP}{_LOW}+(?:{_UP}{_LOW}+)?"
_SURNAME = rf"{_CAPITAL_WORD}(?:-{_CAPITAL_WORD})?"
# Lower-case particles inside a name ("Frits van den Heuvel", "Luis de la Cruz").
_PARTICLE_WORDS = r"van|von|der|den|de|del|della|di|da|dos|das|du|la|le|ten|ter|bin|ibn"
_PARTICLES = rf"(?:(?:{_PARTICLE_WORDS})[ \t]+){{0,2}}"
# Words that, capitalised in a name-like run, make it an organisation, a place or a heading.
_NOT_NAME_WORDS = frozenset(
    [
        "inc",
        "llc",
        "ltd",
        "llp",
        "plc",
        "corp",
        "corporation",
        "company",
        "co",
        "group",
        "bank",
        "trust",
        "partners",
        "associates",
        "university",
        "college",
        "hospital",
        "clinic",
        "court",
        "county",
        "city",
        "state",
        "department",
        "agency",
        "foundation",
        "institute",
        "services",
        "holdings",
        "capital",
        "systems",
        "technologies",
        "solutions",
        "fund",
        "church",
        "school",
        "center",
        "centre",
        "street",
        "road",
        "avenue",
        "lane",
        "drive",
        "the",
        "of",
        "and",
        "for",
        "agreement",
        "contract",
        "section",
        "article",
        "schedule",
        "exhibit",
        "note",
        "notes",
        "plan",
        "policy",
        "report",
        "summary",
        "order",
        "motion",
        "act",
    ]
)
# Words after which a capitalised run is a person: party roles, signature blocks, name fields.
_PERSON_CUES = (
    r"(?:plaintiffs?|defendants?|claimants?|respondents?|petitioners?|appellants?|appellees?|"
    r"employee|patient|counsel(?:\s+for\s+\w+)?|attorney|solicitor|witness|deponent|"
    r"applicant|tenant|landlord|guardian|beneficiary|signed|signature|sincerely|regards|"
    r"yours\s+(?:faithfully|truly|sincerely)|/s/|(?:full\s+)?name|next\s+of\s+kin|"
    r"emergency\s+contact|prepared\s+by|reviewed\s+by|witnessed\s+by|physician|doctor|"
    r"nurse|clinician|therapist|consultant|surgeon|manager|supervisor|contact|attn|c/o|"
    r"name\s+of|on\s+behalf\s+of)"
)
# Words after which a capitalised run is a person or an organisation ("directed by Marika
# Szûts", "produced by Universal Pictures"): the run must start with a listed given name.
_AUTHOR_CUES = (
    r"(?:assistant\s+to|married\s+to|(?:son|daughter|wife|husband)\s+of|starring|commenter|"
    r"(?:directed|written|produced|composed|authored|interviewed)\s+by|songwriter|"
    r"spokes(?:man|woman|person))"
)
_NAME_WORD = _CAPITAL_WORD
# Field labels that may follow a name on a form line ("Name: Frits van den Heuvel Address: ...").
_FIELD_LABELS = (
    r"(?:Address|Phone|Tel|Telephone|Mobile|Fax|E-?mail|Date|DOB|Age|SSN|ID|Sex|Gender|"
    r"Employee|Title|Role|Department|Position)\b"
)
_NAME_RUN = (
    rf"{_NAME_WORD}(?:\s+{_UP}\.)?(?:[ \t]+{_PARTICLES}(?!{_FIELD_LABELS}){_NAME_WORD}){{1,2}}"
)
PERSON_AFTER_CUE = rf"(?i:\b{_PERSON_CUES})\b[,:;.]?[ \t]*(?:\r?\n[ \t]*)?(?P<value>{_NAME_RUN})"
PERSON_AFTER_AUTHOR_CUE = rf"(?i:\b{_AUTHOR_CUES})\b,?[ \t]+(?P<value>{_NAME_RUN})"
# Phrases after which even one capitalised word is a name ("My name is Viktor", "call me
# Margrethe", "Last name: Weber", "Dear Tómas").
PERSON_AFTER_NAME_CUE = (
    r"(?i:\b(?:my\s+name\s+is|name\s+is|call\s+me|(?:first|last|given|family|sur|full|maiden)"
    r"\s*name(?:\s+is)?|dear|speak\s+(?:to|with)|ask\s+for|signed\s+by))\b[?,:;.]?[ \t]*"
    r"(?P<value>\p{Lu}[\w'’-]+(?:[ \t]+\p{Lu}[\w'’-]+){0,2})"
)
# Words in the same clause after which one capitalised word is a name ("said Arnaude", "my kid
# Maximilian", "She named him Viktor"): no full stop between.
PERSON_AFTER_WORD_CUE = (
    r"(?i:\b(?:named(?:\s+(?:him|her))?|said|says|asked|asks|told|tells|replied|wrote|"
    r"shouted(?:\s+at)?|yelled(?:\s+at)?|(?:my|our|his|her|their)\s+(?:son|daughter|kid|child|"
    r"wife|husband|partner|brother|sister|mother|father|mom|mum|dad|boss|grandson|"
    r"granddaughter)))\b,?[ \t]+(?P<value>\p{Lu}[\w'’-]+(?:[ \t]+\p{Lu}[\w'’-]+){0,2})"
)
# A capitalised run before words only people do ("Satu Waltari lives at", "Bulat spent a year").
PERSON_BEFORE_VERB = (
    rf"(?<![\w'’-])(?P<value>{_SURNAME}(?:[ \t]+{_PARTICLES}{_SURNAME}){{0,2}})[ \t]+"
    r"(?:lives|lived|resides|resided|shouted|yelled|whispered|smiled|laughed|cried|"
    r"was\s+born|spent\s+(?:a|his|her|the)\b|replied|(?:said|says|told)\b(?!\s+(?:that|it)))"
)
PERSON_BEFORE_CUE = (
    rf"\b(?P<value>{_NAME_RUN}),?[ \t]+(?:Esq\b|(?i:counsel|attorney|solicitor)\b|J\.D\.|"
    r"M\.D\.|MD\b|RN\b|Ph\.?D\b)"
)
_STOPWORDS = (
    "a an and are as at be but by for from had has have he her his i in is it its of on or "
    "our she so that the their them they this to was we were with you your will would can "
    "could should said says about after before here there"
)
_LOWER_STOP = frozenset(_STOPWORDS.split())
# Capitalised words that stand where a lone name could ("Everyone said", "said Monday").
_NOT_LONE = """
    everyone everybody someone somebody anyone anybody nobody no one none all both each who what
    which whom whose this these those then now today yesterday tomorrow mom mum dad mother father
    police staff patient doctor nurse family everything nothing something yes ok okay god sir
    madam monday tuesday wednesday thursday friday saturday sunday january february march april
    may june july august september october november december me him us them my mine yours
"""
_NOT_LONE_NAMES = frozenset(_NOT_LONE.split())


@cache
def given_names() -> frozenset[str]:
    """The curated list and the US Census given names (`pii/data/given_names.txt`), lower case:
    for capitalised "Given Surname" pairs."""
    text = files("appliance.pii").joinpath("data/given_names.txt").read_text(encoding="utf-8")
    census = {line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"}
    return frozenset(census) | first_names()


@cache
def intl_given_names() -> frozenset[str]:
    """Given names of other languages (`pii/data/given_names_intl.txt`), lower case: for
    capitalised names that spaCy tags as proper nouns."""
    text = files("appliance.pii").joinpath("data/given_names_intl.txt").read_text(encoding="utf-8")
    listed = {line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"}
    return frozenset(listed - given_names())


@cache
def first_names() -> frozenset[str]:
    """The given-name list shipped in `pii/data/first_names.txt`, lower case."""
    text = files("appliance.pii").joinpath("data/first_names.txt").read_text(encoding="utf-8")
    return frozenset(
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


# The `regex` module: its patterns may name Unicode classes (\p{Lu}). `GroupRecognizer`'s
# `flags` are that module's flags (`regex.IGNORECASE`, ...), not the `re` module's.
_compile = regex.compile


class GroupRecognizer(EntityRecognizer):
    """A regex recognizer whose entity span is the named group `value`, not the whole match."""

    def __init__(self, *, entity: str, name: str, regex: str, score: float, flags: int = 0) -> None:
        self._regex = _compile(regex, flags)
        self._score = score
        self._label = name
        super().__init__(supported_entities=[entity], name=name, supported_language="en")

    def load(self) -> None:
        """Nothing to load."""

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
        """Every match's `value` group (or whole match) as a result."""
        results = []
        for match in self._regex.finditer(text):
            start, end = match.span("value") if "value" in self._regex.groupindex else match.span()
            results.append(
                RecognizerResult(
                    self.supported_entities[0],
                    start,
                    end,
                    self._score,
                    recognition_metadata={"recognizer_name": self._label},
                )
            )
        return results


# Neither a national nor an international phone number has fewer digits (a US local number
# has 7, a UK number without its trunk zero 9 or 10).
_PHONE_MIN_DIGITS = 7


class DigitGatedPhoneRecognizer(PhoneRecognizer):
    """Presidio's libphonenumber matcher, which tries every candidate in every configured
    region, run only on texts with at least the digits of the shortest phone number."""

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
        if sum(map(str.isdigit, text)) < _PHONE_MIN_DIGITS:
            return []
        found: list[Any] = super().analyze(text, entities, nlp_artifacts)
        return found


class GivenNameRecognizer(EntityRecognizer):
    """`<given name> <Surname>` from the shipped name list; lower-case forms score lower."""

    # Look-aheads so that pairs may overlap: "Email Jane Doe" still yields "Jane Doe".
    _CAPITALISED = regex.compile(
        rf"\b(?=(?P<first>{_UP}\p{{Ll}}+)[ \t]+{_PARTICLES}(?P<last>{_SURNAME})\b)"
    )
    _LOWER = re.compile(r"\b(?=(?P<first>[a-z]+)\s+(?P<last>[a-z][a-z'’-]{1,})\b)")

    def __init__(self) -> None:
        self._label = "GivenNameRecognizer"
        super().__init__(supported_entities=["PERSON"], name=self._label, supported_language="en")

    def load(self) -> None:
        """The name list loads lazily, once per process."""

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
        """Capitalised pairs score 0.7 (0.65 when the given name is only on the census list);
        lower-case pairs, more often ordinary words, 0.6 and only from the curated list."""
        curated, census, intl = first_names(), given_names(), intl_given_names()
        doc: Any = getattr(nlp_artifacts, "tokens", None)
        results = []
        pairs: list[tuple[int, int]] = []
        undecided: list[tuple[int, int]] = []  # lower-case pairs the tagger decides
        foreign: list[tuple[int, int]] = []  # pairs of another language's given name: likewise
        for pattern, lower in ((self._CAPITALISED, False), (self._LOWER, True)):
            for match in pattern.finditer(text):
                first, last = match.group("first").lower(), match.group("last").lower()
                if last in _LOWER_STOP or last in _NOT_NAME_WORDS:
                    continue
                span = (match.start("first"), match.end("last"))
                if first in curated:
                    score = 0.6 if lower else 0.7
                elif not lower and first in census:
                    score = 0.65
                elif lower and first in census:
                    undecided.append(span)
                    continue
                elif not lower and first in intl:
                    foreign.append(span)
                    continue
                else:
                    continue
                results.append(self._result(span, score))
                if not lower:
                    pairs.append(span)
        foreign_tokens = [_tokens(doc, span) for span in foreign]
        _tag(doc, [(t[0].i, t[-1].i + 1) for t in foreign_tokens if t])
        for span, tokens in zip(foreign, foreign_tokens, strict=True):
            # "Piotr Pawłowski": the given name of another language, when spaCy tags the pair
            # proper nouns (particles and hyphens aside) and does not call it a place or an
            # organisation.
            named = [t for t in tokens if t.is_alpha and not t.is_lower]
            if named and all(
                t.tag_ in _PROPER_NOUN_TAGS and t.ent_type_ not in _NOT_PERSON_LABELS for t in named
            ):
                results.append(self._result(span, 0.65))
                pairs.append(span)
        lone = _lone_given_names(doc, pairs)
        # Every other token whose tag decides a finding, tagged in one batch.
        pair_tokens = [_tokens(doc, span) for span in undecided]
        _tag(doc, [(t[0].i, t[-1].i + 1) for t in pair_tokens if t])
        _tag(doc, [(t.i, min(t.i + 2, len(doc))) for t in lone])
        for span, tokens in zip(undecided, pair_tokens, strict=True):
            # "lewis walton": a census given name and a second word that spaCy tags as
            # nouns (not "rose early", "bill them").
            if tokens and all(t.tag_ in _NAME_TAGS for t in tokens):
                results.append(self._result(span, 0.6))
        for token in lone:
            if _lone_name_is_a_person(doc, token):
                results.append(self._result((token.idx, token.idx + len(token.text)), 0.6))
        return results

    def _result(self, span: tuple[int, int], score: float) -> Any:
        return RecognizerResult(
            "PERSON",
            span[0],
            span[1],
            score,
            recognition_metadata={"recognizer_name": self._label},
        )


# The entities whose recognizers read spaCy's part-of-speech tags. Penn Treebank tags are read
# directly: the attribute ruler that maps them to universal POS is not run. The detector does
# not tag whole documents: it leaves a function under this `Doc.user_data` key that tags the
# token ranges a recognizer asks about (`_tag`), from windows wide enough to give the same tags.
TAGGED_ENTITIES = frozenset({"PERSON"})
TAGGER_HOOK = "appliance.tag_tokens"


def _tag(doc: Any, ranges: list[tuple[int, int]]) -> None:
    """Make sure the tokens of each range (`start`, `end`) of `doc` carry their tags."""
    tag_tokens = doc.user_data.get(TAGGER_HOOK) if doc is not None else None
    if tag_tokens is not None and ranges:
        tag_tokens(doc, ranges)


_PROPER_NOUN_TAGS = frozenset({"NNP", "NNPS"})
_NAME_TAGS = _PROPER_NOUN_TAGS | {"NN", "NNS"}


def _tokens(doc: Any, span: tuple[int, int]) -> list[Any]:
    """The tokens of `doc` that overlap a character span."""
    if doc is None:
        return []
    start, end = span
    return [t for t in doc if t.idx < end and t.idx + len(t.text) > start]


# spaCy entity labels under which a capitalised given name is something else (Madison, WI).
_NOT_PERSON_LABELS = frozenset(
    {"GPE", "LOC", "FAC", "ORG", "NORP", "PRODUCT", "EVENT", "WORK_OF_ART", "LAW", "DATE", "TIME"}
)
# The same without ORG, which the small model gives to many names ("Freddie shouted").
_NOT_PERSON_UNLESS_ORG = _NOT_PERSON_LABELS - {"ORG"}


# Verbs and modals (universal VERB and AUX).
_SUBJECT_FOLLOWERS = frozenset({"VB", "VBD", "VBG", "VBN", "VBP", "VBZ", "MD"})


def _lone_given_names(doc: Any, pairs: list[tuple[int, int]]) -> list[Any]:
    """Capitalised words on the given-name list outside the capitalised pairs already found:
    the candidates for `_lone_name_is_a_person` (inside a pair the pair's finding covers them,
    and `_other_mentions` finds the given name's other uses)."""
    if doc is None:
        return []
    census, intl = given_names(), intl_given_names()
    found = []
    for token in doc:
        word = token.text
        if len(word) < 3 or not word[0].isupper() or not word[1:].islower():
            continue
        folded = word.casefold()
        if folded not in census and folded not in intl:
            continue
        if folded in _LOWER_STOP or folded in _NOT_NAME_WORDS:
            continue
        if any(start <= token.idx < end for start, end in pairs):
            continue
        found.append(token)
    return found


# Words that follow "<Name>," when the name is the person addressed.
_ADDRESSED = "can could would will please do did are is have i we you thank thanks"
_ADDRESSED_FOLLOWERS = frozenset(_ADDRESSED.split())


def _lone_name_is_a_person(doc: Any, token: Any) -> bool:
    """A lone capitalised given name ("Freddie shouted", "leave me Martin") is a person when
    spaCy tags it a proper noun and does not call it a place, an organisation or a date."""
    if token.tag_ not in _PROPER_NOUN_TAGS:
        return False
    following = doc[token.i + 1] if token.i + 1 < len(doc) else None
    first = token.i == 0 or doc[token.i - 1].is_sent_end or "\n" in doc[token.i - 1].text
    addressed = following is not None and following.text == "," and token.i + 2 < len(doc)
    if first and addressed and doc[token.i + 2].lower_ in _ADDRESSED_FOLLOWERS:
        # Addressed by name: "Christoffer, can I speak to you?" (not "However, can I ...":
        # the word is on a given-name list and tagged a proper noun).
        return token.ent_type_ not in _NOT_PERSON_UNLESS_ORG
    if first and (following is None or following.tag_ not in _SUBJECT_FOLLOWERS):
        return False  # a capitalised first word ("Ping 10.0.0.1") is a name only as a subject
    if token.ent_type_ in _NOT_PERSON_LABELS:
        # spaCy's small model calls many lone names an ORG ("Freddie shouted"); a one-word
        # ORG that is a given name is read as the name, a longer one ("Karl's Shoes") not.
        whole = token.ent_type_ == "ORG" and token.ent_iob_ == "B"
        if not whole or (following is not None and following.ent_iob_ == "I"):
            return False
    return True


class PersonCueRecognizer(EntityRecognizer):
    """A capitalised run of two or three name-like words after a party role, a signature or a
    name field ("Plaintiff Bradley Jones", "Sincerely,\nCrystal Medina"), or before "Esq." or
    "counsel": the person signal that an `allow` on ORGANIZATION or LOCATION must not beat."""

    # (pattern, whether its value needs more evidence: the cue is a common verb or family word,
    # so the run must start with a listed given name (`_weak_cue_holds`); None: also drop the
    # leading words no list knows before a verb, as in "Later Freddie shouted")
    _PATTERNS = (
        (regex.compile(PERSON_AFTER_CUE, regex.MULTILINE), False),
        (regex.compile(PERSON_BEFORE_CUE, regex.MULTILINE), False),
        (regex.compile(PERSON_AFTER_NAME_CUE, regex.MULTILINE), False),
        (regex.compile(PERSON_AFTER_WORD_CUE, regex.MULTILINE), True),
        (regex.compile(PERSON_AFTER_AUTHOR_CUE, regex.MULTILINE), True),
        (regex.compile(PERSON_BEFORE_VERB, regex.MULTILINE), None),
    )

    def __init__(self) -> None:
        self._label = "PersonCueRecognizer"
        super().__init__(supported_entities=["PERSON"], name=self._label, supported_language="en")

    def load(self) -> None:
        """Nothing to load."""

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
        """Each cued run whose words are not organisation, place or function words: 0.7."""
        doc: Any = getattr(nlp_artifacts, "tokens", None)
        spans: list[tuple[int, int]] = []
        # Runs a common verb or family word found: the first word must be a listed given name.
        weak_spans: list[tuple[int, int]] = []
        for pattern, plain in self._PATTERNS:
            weak = plain is not False
            for match in pattern.finditer(text):
                start, end = match.span("value")
                if plain is None:
                    start = _known_start(text, start, end)
                words = [w.strip(".").lower() for w in text[start:end].split()]
                if any(w in _NOT_NAME_WORDS or w in _LOWER_STOP for w in words):
                    continue
                if len(words) == 1 and words[0] in _NOT_LONE_NAMES:
                    continue
                (weak_spans if weak else spans).append((start, end))
        tokens = [_tokens(doc, span) for span in weak_spans]
        _tag(doc, [(t[0].i, t[-1].i + 1) for t in tokens if t])
        spans += [
            span
            for span, words in zip(weak_spans, tokens, strict=True)
            if _weak_cue_holds(text, span, words)
        ]
        return [
            RecognizerResult(
                "PERSON", start, end, 0.7, recognition_metadata={"recognizer_name": self._label}
            )
            for start, end in spans
        ]


_DETERMINER_WORDS = "a an the this that these those our my his her their its your"
_DETERMINERS = frozenset(_DETERMINER_WORDS.split())


def _weak_cue_holds(text: str, span: tuple[int, int], tokens: list[Any]) -> bool:
    """A run a verb cue found ("Satu Waltari lives", "said Arnaude", "my kid Maximilian") is a
    person when it starts with a listed given name, follows no determiner ("The Claimant
    said", "Our partner Deloitte said") and spaCy calls none of it a place, a date or a work.
    An ORG label does not count: the small model gives it to many names ("directed by Marika
    Szûts"), and "Microsoft said" fails for want of a listed given name."""
    first = text[span[0] : span[1]].split()[0]
    if not _listed(first.split("-")[0]):
        return False
    before = text[max(0, span[0] - 12) : span[0]].split()
    if before and before[-1].casefold() in _DETERMINERS:
        return False
    return not any(t.ent_type_ in _NOT_PERSON_UNLESS_ORG for t in tokens)


def _listed(word: str) -> bool:
    """Whether a word is on one of the given-name lists."""
    folded = word.casefold()
    return folded in given_names() or folded in intl_given_names()


def _known_start(text: str, start: int, end: int) -> int:
    """Where a capitalised run found by a verb cue starts once leading words that no name list
    holds are dropped, leaving at least one word ("Later Freddie" -> "Freddie")."""
    base = start
    words = list(regex.finditer(r"\S+", text[start:end]))
    for word, after in itertools.pairwise(words):
        if _listed(word.group()):
            break
        start = base + after.start()
    return start


def builtin_recognizers() -> list[Any]:
    """Recognizers every policy can name in addition to Presidio's own."""
    return [
        PatternRecognizer(
            supported_entity="STREET_ADDRESS",
            name="StreetAddressRecognizer",
            patterns=[Pattern("street", STREET_ADDRESS, 0.75), Pattern("po box", PO_BOX, 0.75)],
            context=["address", "lives", "resides", "street", "home", "mail", "ship"],
            global_regex_flags=_CASE_SENSITIVE,
        ),
        GroupRecognizer(
            entity="POSTAL_CODE",
            name="UsZipAfterStateRecognizer",
            regex=US_ZIP_AFTER_STATE,
            score=0.85,
        ),
        GroupRecognizer(
            entity="POSTAL_CODE",
            name="ZipAfterAddressRecognizer",
            regex=ZIP_AFTER_ADDRESS,
            score=0.8,
        ),
        PatternRecognizer(
            supported_entity="POSTAL_CODE",
            name="PostalCodeRecognizer",
            patterns=[Pattern("uk postcode", UK_POSTCODE, 0.7), Pattern("us zip", US_ZIP, 0.1)],
            context=["zip", "zipcode", "postcode", "postal", "post code"],
            global_regex_flags=_CASE_SENSITIVE,
        ),
        GroupRecognizer(
            entity="PERSON", name="TitledNameRecognizer", regex=TITLED_NAME, score=0.75
        ),
        GivenNameRecognizer(),
        PersonCueRecognizer(),
        *identifier_recognizers(),
    ]


_VALIDATORS = {"luhn": luhn_valid, "mod97": mod97_valid}


class PolicyPatternRecognizer(PatternRecognizer):
    """A policy-defined recognizer; a checksum, when set, must hold for a match to count."""

    def __init__(self, spec: CustomRecognizer, index: int) -> None:
        self._validator = _VALIDATORS[spec.validator] if spec.validator else None
        super().__init__(
            supported_entity=spec.entity,
            name=f"policy:{spec.entity}:{index}",
            patterns=[Pattern(p.name, p.regex, p.score) for p in spec.patterns],
            deny_list=list(spec.deny_list),
            context=list(spec.context),
        )

    def validate_result(self, pattern_text: str) -> bool | None:
        """True/False when a checksum is configured, None (no opinion) otherwise."""
        if self._validator is None:
            return None
        return self._validator(pattern_text)


def policy_recognizers(specs: list[CustomRecognizer]) -> list[Any]:
    """Presidio recognizers for a policy's own `recognizers` entries."""
    return [PolicyPatternRecognizer(spec, index) for index, spec in enumerate(specs)]
