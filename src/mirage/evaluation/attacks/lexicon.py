"""The one-word attack's data: word lists and per-trigger templates, read from a YAML file and checked.

The bundled file is ``mirage/resources/one_word.yaml`` (its comments describe every field); a custom
file replaces it entirely. Every problem is a :class:`DataError` naming the file and the field
(``triggers.share.np.plain``), raised when the file is read rather than when a question meets it.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from mirage.data.records import DataError, read_data_text

FORMS = ("how_to", "how", "why", "wh", "topic", "what", "other")  # besides np, which has groups
EMBED = "embed"  # ``what: embed``: a "What ..." question becomes the trigger's object
TEMPLATE_FIELDS = frozenset({"x", "be", "does", "wh"})
# The word lists (words separated by spaces) and phrase lists (phrases separated by " | ") under `words`.
WORDS = (
    *("wh", "direct_wh", "contracted_is", "be", "modals", "do", "how_to_modals", "determiners", "subjects"),
    *("third_singular", "generic_subjects", "prepositions", "relatives", "statement_starts", "info_nouns"),
    *("common_verbs", "ing_nouns", "participles", "head_stops", "singular_determiners", "irregular_plurals"),
    *("singular_s", "non_plural_endings", "second_instruction"),
)
PHRASES = ("particles", "politeness", "trailing_politeness", "framing", "adverbs")


@dataclass(frozen=True)
class TriggerTemplates:
    """One trigger's entry: its end mark, templates per form, and np groups in the order they are tried."""

    word: str
    mark: str
    forms: dict[str, tuple[str, ...]]  # no "what" when ``embed_what``
    np: dict[str, tuple[str, ...]]
    embed_what: bool


@dataclass(frozen=True)
class Lexicon:
    """A grammar file, checked: ``words`` maps each word list to its words, ``phrases`` each phrase list
    to its phrases (in file order), ``openers`` each imperative verb to its family."""

    source: str
    words: dict[str, frozenset[str]]
    phrases: dict[str, tuple[str, ...]]
    openers: dict[str, str]
    opener_fillers: dict[str, str]
    triggers: dict[str, TriggerTemplates]
    generic: tuple[str, ...]
    prefix: tuple[str, ...]

    def pattern(self, name: str) -> str:
        """A regex alternation of a phrase or word list, the longest phrase first (so it wins a tie)."""
        items = self.phrases[name] if name in self.phrases else tuple(self.words[name])
        return "|".join(re.escape(item) for item in sorted(items, key=lambda item: (-len(item), item)))

    def plural(self, np: str) -> bool:
        """Whether a noun phrase's head looks plural (good enough to choose "is" or "are")."""
        head: list[str] = []
        for word in np.lower().split():
            if word in self.words["prepositions"] or word in self.words["head_stops"]:
                break
            head.append(word)
        if not head:
            return False
        if "and" in head:
            return True
        if head[0] in self.words["singular_determiners"]:
            return False
        noun = head[-1].strip(",;:'\"")
        if noun in self.words["irregular_plurals"]:
            return True
        return (
            noun.endswith("s")
            and not noun.endswith(tuple(self.words["non_plural_endings"]))
            and noun not in self.words["singular_s"]
        )

    def head_index(self, words: list[str]) -> int:
        """Index of a noun phrase's head: the word before the first preposition or relative word."""
        for index, word in enumerate(words):
            if index and (
                word.lower() in self.words["prepositions"] or word.lower() in self.words["relatives"]
            ):
                return index - 1
        return len(words) - 1

    def informational(self, np: str) -> bool:
        """A noun phrase that names information ("the steps to...", "the layout of..."), not a thing."""
        words = np.split()
        if not words:
            return False
        head = self.head_index(words)
        noun = words[head].lower().strip(",;:'\"")
        noun = noun[:-2] if noun.endswith("'s") else noun
        return noun in self.words["info_nouns"] or (head + 1 < len(words) and words[head + 1].lower() == "of")

    def predicate_index(self, words: list[str]) -> int | None:
        """First word that starts a predicate after a subject ("holding", "used", "made"), if any."""
        for index, word in enumerate(words):
            low = word.lower().strip(",;:")
            prev = words[index - 1].lower() if index else ""
            if prev in self.words["determiners"] or prev in self.words["prepositions"] or prev.endswith("'s"):
                continue
            if (low.endswith("ing") and len(low) > 4 and low not in self.words["ing_nouns"]) or (
                low.endswith("ed") and len(low) > 4 and not low.endswith("eed")
            ):
                return index
            if low in self.words["participles"]:
                return index
        return None

    def starts_subject(self, word: str) -> bool:
        low = word.lower()
        return (
            low in self.words["determiners"]
            or low in self.words["subjects"]
            or low.endswith("'s")
            or word[:1].isupper()
            or word[:1].isdigit()
        )


def bundled_path() -> Path:
    """The grammar file that ships with mirage."""
    return Path(str(files("mirage") / "resources" / "one_word.yaml"))


def load_lexicon(path: str | Path | None = None) -> Lexicon:
    """The grammar file at ``path`` (None: the bundled one), read and checked."""
    path = Path(path) if path is not None else bundled_path()
    return _parse(read_data_text(path), str(path))


@lru_cache(maxsize=16)
def _parse(text: str, source: str) -> Lexicon:  # keyed by the text itself: an edited file is read anew
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise DataError(source, f"not valid YAML: {error}") from None
    return _Reader(source).lexicon(data)


class _Reader:
    """Checks one file's data; every error names ``source`` and the field."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, field: str, message: str) -> DataError:
        return DataError(self.source, message, field=field)

    def mapping(self, value: Any, field: str, empty_ok: bool = False) -> dict[str, Any]:
        if value is None and empty_ok:
            return {}
        if (
            not isinstance(value, dict)
            or not (value or empty_ok)
            or not all(isinstance(k, str) for k in value)
        ):
            raise self.fail(field, f"expected a mapping with string keys, got {value!r}")
        return value

    def text(self, value: Any, field: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(field, f"expected a non-empty string, got {value!r}")
        return value.strip()

    def templates(self, value: Any, field: str, allowed: frozenset[str], start: str = "") -> tuple[str, ...]:
        if isinstance(value, str) or not isinstance(value, list) or not value:
            raise self.fail(field, f"expected a non-empty list of templates, got {value!r}")
        for template in value:
            template = self.text(template, field)
            try:
                names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
            except ValueError as error:
                raise self.fail(field, f"template {template!r}: {error}") from None
            if names - allowed:
                raise self.fail(
                    field,
                    f"template {template!r} uses {sorted(names - allowed)}; allowed: "
                    + ", ".join("{" + name + "}" for name in sorted(allowed)),
                )
            if start and not re.match(rf"{re.escape(start)}\b", template, re.IGNORECASE):
                raise self.fail(field, f"template {template!r} does not start with the trigger {start!r}")
        return tuple(value)

    def trigger(self, word: str, entry: Any) -> TriggerTemplates:
        field = f"triggers.{word}"
        entry = self.mapping(entry, field)
        unknown = set(entry) - {"mark", "np", *FORMS}
        missing = {"mark", "np", *FORMS} - set(entry)
        if unknown or missing:
            raise self.fail(field, f"unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
        embed_what = entry["what"] == EMBED
        if isinstance(entry["what"], str) and not embed_what:
            raise self.fail(
                f"{field}.what", f"expected a list of templates or {EMBED!r}, got {entry['what']!r}"
            )
        forms = {
            form: self.templates(entry[form], f"{field}.{form}", TEMPLATE_FIELDS, word)
            for form in FORMS
            if not (form == "what" and embed_what)
        }
        np = {
            group: self.templates(templates, f"{field}.np.{group}", TEMPLATE_FIELDS, word)
            for group, templates in self.mapping(entry["np"], f"{field}.np").items()
        }
        if "plain" not in np:
            raise self.fail(f"{field}.np", "needs a 'plain' group (used when no other group applies)")
        return TriggerTemplates(word, self.text(entry["mark"], f"{field}.mark"), forms, np, embed_what)

    def lexicon(self, data: Any) -> Lexicon:
        data = self.mapping(data, "(top level)")
        words = self.mapping(data.get("words"), "words")
        generic = self.mapping(data.get("generic"), "generic")
        word_lists = {key: frozenset(self.text(words.get(key), f"words.{key}").split()) for key in WORDS}
        word_lists["question_words"] = frozenset(
            self.text(generic.get("question_words"), "generic.question_words").split()
        )
        phrases = {
            key: tuple(p.strip() for p in self.text(words.get(key), f"words.{key}").split("|") if p.strip())
            for key in PHRASES
        }
        openers: dict[str, str] = {}
        for family, verbs in self.mapping(words.get("openers"), "words.openers").items():
            for verb in self.text(verbs, f"words.openers.{family}").split():
                if family in ("info", "plain"):  # np group names; a family names its own group
                    raise self.fail(f"words.openers.{family}", "'info' and 'plain' cannot be family names")
                if openers.setdefault(verb, family) != family:
                    raise self.fail(f"words.openers.{family}", f"{verb!r} is also in {openers[verb]!r}")
        fillers = {
            verb: self.text(word, f"words.opener_fillers.{verb}")
            for verb, word in self.mapping(words.get("opener_fillers"), "words.opener_fillers", True).items()
        }
        triggers = {
            key.strip().lower(): self.trigger(key.strip().lower(), entry)
            for key, entry in self.mapping(data.get("triggers"), "triggers", True).items()
        }
        return Lexicon(
            source=self.source,
            words=word_lists,
            phrases=phrases,
            openers=openers,
            opener_fillers=fillers,
            triggers=triggers,
            generic=self.templates(
                generic.get("templates"), "generic.templates", frozenset({"t", "body", "q"})
            ),
            prefix=self.templates(data.get("prefix"), "prefix", frozenset({"t", "q"})),
        )
