"""Tokenising and sentence splitting shared by the BM25 index, the relevance gate and the answer composer."""

from __future__ import annotations

import re
from functools import lru_cache

import bm25s
import Stemmer
from bm25s.stopwords import STOPWORDS_EN_PLUS

# Part of the side index's cache key: a change here must rebuild every BM25 index.
TOKENIZER_VERSION = "snowball-en-plus-us-v2"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
# Control characters (NUL, CR, vertical tab...) and every kind of space (no-break, line separator...).
_SEPARATORS = re.compile(r"[\x00-\x1f\x7f-\x9f]|\s")


@lru_cache(maxsize=1)
def _stemmer() -> Stemmer.Stemmer:
    return Stemmer.Stemmer("english")


# British spellings read as American ones, so "fecal" finds a case that writes "faecal" and "esophagus" one
# that writes "oesophagus": (pattern, replacement) applied to each lower-cased word before stemming.
_SPELLING = [(re.compile(p), r) for p, r in (
    (r"(?<=\w)ae", "e"),  # haem-, faecal, anaemia, ischaemia, paediatric (not a word-initial "aero-")
    (r"^oe", "e"),  # oesophagus, oedema, oestrogen
    (r"oea$", "ea"),  # diarrhoea
    (r"^(c|f)oe", r"\1e"),  # coeliac, foetal
    (r"(?<=[lmv])our$", "or"),  # tumour, colour, favour (not "four", "hour", "your")
)]


def _american(word: str) -> str:
    for pattern, replacement in _SPELLING:
        word = pattern.sub(replacement, word)
    return word


def _stem_words(words: list[str]) -> list[str]:
    return _stemmer().stemWords([_american(w) for w in words])


def stem(word: str) -> str:
    """A single word as the index stores it (lower-cased, American-spelt, Snowball-stemmed)."""
    return _stem_words([word.lower()])[0]


def tokenize(texts: list[str]) -> list[list[str]]:
    """Lower-cased, stop words removed, American-spelt, stemmed (Snowball): the same for documents and questions."""
    return bm25s.tokenize(texts, stopwords=list(STOPWORDS_EN_PLUS), stemmer=_stem_words, return_ids=False,
                          show_progress=False)


def sentences(text: str) -> list[str]:
    """Sentences and bullet items of a passage, verbatim (so they can be quoted as evidence)."""
    out: list[str] = []
    for block in re.split(r"\n\s*\n|\n(?=\s*[-*] )", text):
        block = re.sub(r"^\s*[-*]\s+", "", block.strip())
        block = re.sub(r"\s*\n\s*", " ", block)
        out.extend(s.strip() for s in _SENTENCE_END.split(block) if len(s.strip()) > 2)
    return out


def spaced(text: str) -> str:
    """Typed text with its control characters and unusual spaces as plain spaces: "renal\\x00crisis" must read
    as two words when the question's unprintable characters are dropped, not as "renalcrisis"."""
    return _SEPARATORS.sub(" ", text)
