"""Builds `appliance/pii/data/given_names_intl.txt`: given names of non-English locales.

The census list covers names common in the US; documents name people from everywhere
("Piotr Pawłowski", "Halldór Árnþórsson"). This list holds the given names of Faker's person
providers (MIT licence) for every locale written in the Latin alphabet except the English ones,
lower case, minus names of two letters or fewer, common English words, and words the other
lists leave out for that reason. Run `python -m tests.support.intl_names` to rebuild it.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[2] / "appliance" / "pii" / "data" / "given_names_intl.txt"
_ATTRIBUTES = ("first_names", "first_names_male", "first_names_female", "first_names_nonbinary")
# Given names somewhere that are ordinary English words, months, days or titles: capitalised at
# the start of a sentence or in a heading they are far more often the word.
_ENGLISH = """
    abbey able add adam alpha amber an and angel april art ash august autumn baby bay bell belle
    berry bill blessing bliss blue bo bonnie boy brand brook brooks brown bud bunny burn cam can
    candy carol cash castle chance charity cherry chief china christian clay cliff coco colt cook
    coral cotton crystal daisy dale dawn day dean deborah della den dew diamond dick dolly dominic
    don dove drew duke dusty earl easter echo eden else em ember emerald ever faith fancy fern
    fidel flora florence forest fortune fox frank freedom friday gale gay gem gene ginger glad
    glen glory golden grace grant gray green guy happy harmony hazel heather henna hero holly
    honey hope hunter iris ivory ivy jack jade jasmine jay jean jewel joy jude june junior justice
    karma king lake lance lark laurel lavender lee lemon liberty light lily lincoln long love lucky
    lynn mac made major march marina mark marsh mason matter may meadow mercy merry midnight mike
    miles mill milo mint misty monday moon more moses muslim nice night noble nova oak ocean olive
    opal pan paris pat patience peace pearl penny pepper petal pierce pink piper pleasant poppy
    prince princess queen rain raven ray red reed rich river robin rock rocky rose ruby rush rusty
    saint sage salvador santa saturday savannah scarlet sea september serene shade shadow sharp
    sierra silver sky snow sol sonny spencer spring star sterling stone storm summer sun sunday
    sunny sweet tab tan taylor teal temple thunder tiger toy trinity true tuesday unity valiant
    van velvet venus victor violet walker wan warren west will winter wolf wood wren young
    uno alli siri zara lada
"""
ENGLISH_WORDS = frozenset(_ENGLISH.split())


def names() -> list[str]:
    """The list, sorted, from the installed Faker."""
    import faker.providers.person as person

    found: set[str] = set()
    for module in pkgutil.iter_modules(person.__path__):
        if module.name.startswith("en"):
            continue
        provider = importlib.import_module(f"{person.__name__}.{module.name}").Provider
        for attribute in _ATTRIBUTES:
            value = provider.__dict__.get(attribute)
            if isinstance(value, dict):
                value = list(value)
            if isinstance(value, list | tuple):
                found.update(str(v).strip().casefold() for v in value)
    return sorted(n for n in found if _usable(n))


@cache
def english_words() -> frozenset[str]:
    """The words above, Faker's list of common English words (its `en_US` lorem) and every
    word of WordNet's index that spaCy's English lemmatizer ships (nouns, verbs, adjectives,
    adverbs, and the places and brands WordNet holds: "server", "mars", "india", "hermes")."""
    import spacy
    from faker.providers.lorem.en_US import Provider as Lorem

    from appliance.config import Settings

    lemmatizer: Any = spacy.load(Settings().spacy_model).get_pipe("lemmatizer")
    index = lemmatizer.lookups.get_table("lemma_index")
    wordnet = {word.casefold() for words in index.values() for word in words}
    return frozenset(ENGLISH_WORDS | {word.casefold() for word in Lorem.word_list} | wordnet)


def _usable(name: str) -> bool:
    latin = all(c.isascii() or "\u00c0" <= c <= "\u024f" for c in name)
    return latin and name.isalpha() and len(name) > 2 and name not in english_words()


def main() -> None:
    from faker import VERSION

    header = [
        f"# Given names of Faker {VERSION}'s person providers (MIT licence) for every Latin-",
        "# alphabet locale except English ones, lower case; built by tests/support/intl_names.py.",
        "# Left out: names of two letters or fewer and English words (WordNet's index, Faker's",
        "# word list, and brands or words added by hand). Used for capitalised",
        "# names that spaCy tags proper nouns, never for lower-case ones.",
    ]
    OUT.write_text("\n".join([*header, *names()]) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
