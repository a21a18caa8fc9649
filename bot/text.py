"""Tokenising and sentence splitting shared by the BM25 index, the relevance gate and the answer composer."""

from __future__ import annotations

import re
from functools import lru_cache

import bm25s
import Stemmer
from bm25s.stopwords import STOPWORDS_EN_PLUS

# Part of the side index's cache key: a change here must rebuild every BM25 index.
TOKENIZER_VERSION = "snowball-en-plus-v1"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


@lru_cache(maxsize=1)
def _stemmer() -> Stemmer.Stemmer:
    return Stemmer.Stemmer("english")


def stem(word: str) -> str:
    """A single word as the index stores it (lower-cased, Snowball-stemmed)."""
    return _stemmer().stemWord(word.lower())


def tokenize(texts: list[str]) -> list[list[str]]:
    """Lower-cased, stop words removed, stemmed (Snowball): the same for documents and questions."""
    return bm25s.tokenize(texts, stopwords=list(STOPWORDS_EN_PLUS), stemmer=_stemmer(), return_ids=False, show_progress=False)


def sentences(text: str) -> list[str]:
    """Sentences and bullet items of a passage, verbatim (so they can be quoted as evidence)."""
    out: list[str] = []
    for block in re.split(r"\n\s*\n|\n(?=\s*[-*] )", text):
        block = re.sub(r"^\s*[-*]\s+", "", block.strip())
        block = re.sub(r"\s*\n\s*", " ", block)
        out.extend(s.strip() for s in _SENTENCE_END.split(block) if len(s.strip()) > 2)
    return out
