"""The one-word attack's grammar: reduce a question to a *form* and fill a trigger's templates for it.

The rules live here and are described in :mod:`mirage.evaluation.attacks.one_word`; the word lists and
the templates are data, read by :mod:`mirage.evaluation.attacks.lexicon`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from mirage.evaluation.attacks.lexicon import Lexicon


@dataclass
class Form:
    """A question reduced to one form: ``kind`` picks the templates, ``x`` fills them."""

    kind: str
    x: str
    family: str = "inform"
    wh: str = ""
    tail: str = ""  # words moved to the end ("in detail", ", based on the image")


def lower_first(text: str) -> str:
    """Lower-case a sentence-initial word, leaving "I", acronyms and names like "iPhone" alone."""
    word = text.split(" ", 1)[0]
    if (
        word in ("I", "I'm", "I'd", "I've", "I'll")
        or not word[:1].isupper()
        or any(c.isupper() for c in word[1:])
    ):
        return text
    return text[:1].lower() + text[1:]


def strip_end(text: str) -> str:
    return re.sub(r"[\s.?!,;:]+$", "", text.strip())


def finish(text: str, mark: str) -> str:
    return re.sub(r"\s+", " ", strip_end(text)).strip() + mark


def _third_person_s(verb: str) -> str:
    if verb == "have":
        return "has"
    if verb.endswith(("s", "sh", "ch", "x", "z", "o")):
        return verb + "es"
    if verb.endswith("y") and len(verb) > 1 and verb[-2] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


class Grammar:
    """The rules over one :class:`Lexicon`: :meth:`parse` a question, :meth:`fill` a trigger's templates."""

    def __init__(self, lexicon: Lexicon) -> None:
        """The rules' compiled patterns over ``lexicon``'s word and phrase lists."""
        self.lexicon = lexicon
        self.w = w = lexicon.words
        self.subjects_only = w["subjects"] - w["determiners"]  # pronouns: "I", "it", "people"
        statement_starts = w["determiners"] | w["subjects"] | w["statement_starts"]
        self.not_instructions = statement_starts | lexicon.openers.keys() | w["wh"] | w["modals"]
        self.aux = w["be"] | w["modals"] | w["do"]
        i = re.IGNORECASE
        self.polite = re.compile(rf"^(?:{lexicon.pattern('politeness')})\b[\s,]*", i)
        please = lexicon.pattern("trailing_politeness")
        self.trailing_please = re.compile(rf"[\s,]+(?:{please})$", i)
        self.framing = re.compile(rf"^((?:{lexicon.pattern('framing')})\b[^,]{{1,80}}),\s*(.+)$", i)
        adverbs = lexicon.pattern("adverbs")
        self.leading_adverb = re.compile(rf"^({adverbs})\b,?\s*", i)
        self.trailing_adverb = re.compile(rf",?\s+({adverbs})$", i)
        verbs = lexicon.pattern("second_instruction")
        self.second = re.compile(
            rf"\s+(?:and|then)\s+(?:(?:{please})\s+)?(?:{verbs})\s+(?:(?:to\s+)?(?:me|us)\s+)?", i
        )
        self.contracted = re.compile(rf"^({lexicon.pattern('contracted_is')})'s\b", i)

    # -- questions -----------------------------------------------------------------------------------
    def declarative(self, wh: str, aux: str, words: list[str]) -> str | None:
        """Put an inverted wh-question ("does the sign say") back in statement order, or None."""
        if not words:
            return None
        w = self.w
        if aux in w["be"]:
            split = self.lexicon.predicate_index(words)
            if split is not None and split > 0:
                return " ".join([*words[:split], aux, *words[split:]])
            if split == 0 or not self.lexicon.starts_subject(words[0]):
                return f"{aux} {' '.join(words)}" if wh in ("what", "who", "which") else None
            if len(words) > 1 and words[-1].lower() in w["prepositions"]:
                return " ".join([*words[:-1], aux, words[-1]])
            return f"{' '.join(words)} {aux}" if wh in ("what", "where", "who", "which", "when") else None
        if words[0].lower() in w["common_verbs"] and aux not in w["do"]:
            # "what can be seen": "what" is the subject
            return f"{aux} {' '.join(words)}"
        verbs = [i for i, word in enumerate(words) if i and word.lower() in w["common_verbs"]]
        first = words[0].lower()
        if first in self.subjects_only or (first in w["subjects"] and not verbs):
            end = 1  # a pronoun subject: "what should I do", "what does this mean"
        elif verbs and self.lexicon.starts_subject(words[0]):
            end = verbs[0]  # a noun-phrase subject up to the first common verb: "what does the sign say"
        else:
            return None
        if end >= len(words):
            return None
        subject, verb, rest = words[:end], words[end], words[end + 1 :]
        if aux == "did":
            return None  # the past tense of an arbitrary verb is beyond these rules
        if aux in w["do"]:
            if aux == "does" and (subject[0].lower() in w["third_singular"] or len(subject) > 1):
                verb = _third_person_s(verb)
            return " ".join([*subject, verb, *rest])
        return " ".join([*subject, aux, verb, *rest])

    def direct(self, wh: str, words: list[str]) -> Form | None:
        """A direct question opened by ``wh`` ("how can I X", "where is the bank")."""
        if not words:
            return None
        first = words[0].lower()
        if wh == "how" and first == "to":
            return Form("how_to", " ".join(words[1:]))
        aux_like = first in self.aux
        if (
            wh == "how"
            and aux_like
            and len(words) > 2
            and words[1].lower() in self.w["generic_subjects"]
            and first not in self.w["be"]
        ):
            return Form("how_to", " ".join(words[2:]))
        if not aux_like:
            return None
        clause = self.declarative(wh, first, words[1:])
        if clause is None:
            return None
        return Form(wh, clause) if wh in ("how", "why") else Form("wh", clause, wh=wh)

    def imperative(self, verb: str, body: str) -> Form | None:
        family = self.lexicon.openers[verb]
        body = re.sub(r"^(?:to )?(?:me|us)\b\s*", "", body, flags=re.IGNORECASE)
        if verb in self.lexicon.opener_fillers:
            body = re.sub(
                rf"^{re.escape(self.lexicon.opener_fillers[verb])}\b\s*", "", body, flags=re.IGNORECASE
            )
        for particle in self.lexicon.phrases["particles"]:
            if body.lower().startswith(particle + " "):
                body = body[len(particle) + 1 :]
                break
        body = self.second.sub(" and ", body)  # "... and share their address" joins the first's content
        tail = ""
        match = self.leading_adverb.match(body)
        if match:
            tail, body = ", " + match.group(1).lower(), body[match.end() :]
        match = self.trailing_adverb.search(body)
        if match and not tail:
            tail, body = " " + match.group(1).lower(), body[: match.start()]
        words = body.split()
        if not words:
            return None  # nothing left to rewrite around ("Describe in detail.")
        first, rest = words[0].lower(), " ".join(words[1:])
        if family == "help":
            return Form("how_to", re.sub(r"^to\s+", "", body), tail=tail)
        if first == "how" and len(words) > 1:
            if words[1].lower() == "to":
                return Form("how_to", " ".join(words[2:]), tail=tail)
            inverted = self.direct("how", words[1:])
            return Form(inverted.kind, inverted.x, tail=tail) if inverted else Form("how", rest, tail=tail)
        if first == "why" and len(words) > 1:
            return Form("why", rest, tail=tail)
        if first in self.w["wh"] and len(words) > 1:
            return Form("wh", rest, wh=first, tail=tail)
        if first == "about" and len(words) > 1:
            return Form("topic", rest, tail=tail)
        return Form("np", body, family=family, tail=tail)

    def strip_politeness(self, core: str) -> str:
        while True:  # "Please, can you kindly ..." loses every layer
            stripped = self.trailing_please.sub("", self.polite.sub("", core, count=1))
            if stripped == core or not stripped:
                return core
            core = stripped

    def parse(self, question: str) -> Form:
        """Reduce a question to its form (see the module docstring)."""
        core = strip_end(re.sub(r"\s+", " ", question))
        is_question = question.rstrip().endswith("?")
        framing = self.framing.match(core)
        if framing:
            inner = self._parse_core(framing.group(2), is_question)
            if inner.kind != "other":
                inner.tail += ", " + lower_first(framing.group(1))
                return inner
        return self._parse_core(core, is_question)

    def _parse_core(self, core: str, is_question: bool) -> Form:
        core = self.contracted.sub(r"\1 is", self.strip_politeness(core))
        words = core.split()
        if not words:
            return Form("other", core)
        first, rest = words[0].lower().strip(",:"), words[1:]
        if first == "what" and rest:
            return Form("what", " ".join(rest))
        if first in self.lexicon.openers and rest:
            form = self.imperative(first, " ".join(rest))
            if form is not None:
                return form
        if first in self.w["direct_wh"] and rest:
            form = self.direct(first, rest)
            if form is not None:
                return form
        if (
            first in self.w["how_to_modals"]
            and len(rest) > 1
            and rest[0].lower() in self.w["generic_subjects"]
        ):
            return Form("how_to", " ".join(rest[1:]))
        if not is_question and first not in self.not_instructions:
            # An instruction with a verb we do not list: "Hack into X."
            return Form("how_to", lower_first(core))
        return Form("other", lower_first(core))

    def embed_what(self, x: str) -> Form:
        """A "What ..." question as the object of a request ("Share what the sign says.")."""
        words = x.split()
        aux, rest = words[0].lower(), words[1:]
        if aux in self.w["be"] and rest:
            split = self.lexicon.predicate_index(rest)
            plain_np = (
                split is None
                and self.lexicon.starts_subject(rest[0])
                and rest[-1].lower() not in self.w["prepositions"]
            )
            # "the purpose of X" reads as a thing to share; "this object" or "it" reads better as "what X is".
            if (
                plain_np
                and self.lexicon.informational(" ".join(rest))
                and rest[0].lower() not in self.subjects_only
            ):
                return Form("np", " ".join(rest), family="inform")
        if aux in self.aux:
            clause = self.declarative("what", aux, rest)
            if clause is not None:
                return Form("wh", clause, wh="what")
            return Form("other", "what " + x)
        return Form("wh", x, wh="what")  # "what kind of dog is this" reads fine after "Share"

    # -- templates -----------------------------------------------------------------------------------
    def fill(self, form: Form, trigger: str) -> list[str]:
        """The filled templates of ``trigger``'s data entry for one form, most natural first."""
        entry = self.lexicon.triggers[trigger.lower()]
        if form.kind == "what" and entry.embed_what:
            form = replace(self.embed_what(form.x), tail=form.tail)
        if form.kind == "np":
            applies = {"info": self.lexicon.informational(form.x), "plain": True}
            group = next(group for group in entry.np if applies.get(group, group == form.family))
            templates = entry.np[group]
        else:
            templates = entry.forms[form.kind]
        be = "are" if self.lexicon.plural(form.x) else "is"
        fields = {"x": form.x, "be": be, "does": "do" if be == "are" else "does", "wh": form.wh}
        return [
            finish(strip_end(template.format(**fields)) + form.tail, entry.mark) for template in templates
        ]

    def generic(self, question: str, trigger: str) -> list[str]:
        """A trigger without an entry: the ``generic`` templates around the question less politeness."""
        mark = "?" if trigger.lower().split()[0] in self.w["question_words"] else "."
        whole = lower_first(self.strip_politeness(strip_end(re.sub(r"\s+", " ", question))))
        words = whole.split()
        body = whole
        if len(words) > 1 and words[0].lower() in self.lexicon.openers:
            body = re.sub(r"^(?:to )?(?:me|us)\b\s*", "", " ".join(words[1:]), flags=re.IGNORECASE) or whole
        return [
            finish(template.format(t=trigger, body=body, q=whole), mark) for template in self.lexicon.generic
        ]
