"""Scanning case text for likely patient identifiers before it enters the index.

Case files must be de-identified; these patterns catch the usual slips (a titled or introduced name, a date of
birth, a calendar date, a record or NHS number, a phone number, an e-mail or postal address). They flag for a
person to check, so they lean towards reporting: `casebot ingest --strict` refuses flagged files instead of
only listing them.

Every pattern runs in time linear in the line: each match has a bounded length, and the one open-ended run (an
e-mail's local part) can start only where such a run starts and never backtracks, so a hostile 160 KB line
costs milliseconds instead of minutes (Python's regex engine holds the interpreter lock while it works, so a
slow scan would stall every other request of the web app).
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bot.cases import Case

# A capitalised name: Latin letters with accents (Seán), O'Connor, McDonald, Smith-Jones.
_UPPER = "A-ZÀ-ÖØ-ÞĀ-ſ"
_LOWER = "a-zß-öø-ÿĀ-ſ"
NAME = rf"[{_UPPER}](?:['’][{_UPPER}])?[{_LOWER}]{{1,30}}+(?:[{_UPPER}][{_LOWER}]{{1,30}}+)?(?:-[{_UPPER}][{_LOWER}]{{1,30}}+)?"
MONTH = (r"(?:January|February|March|April|May|June|July|August|September|October|November|December|"
         r"Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept|Sep|Oct|Nov|Dec)\b\.?")
DAY = r"\d{1,2}(?:st|nd|rd|th)?"
YEAR = r"(?:19|20)\d{2}"
WRITTEN_DATE = rf"(?:{DAY}[ \t]{{1,3}}(?:of[ \t]{{1,3}})?{MONTH}(?:,?[ \t]{{1,3}}{YEAR})?|{MONTH}[ \t]{{1,3}}{DAY}\b(?:,?[ \t]{{1,3}}{YEAR})?)"
NUMERIC_DATE = rf"(?:\d{{1,2}}[/.-]\d{{1,2}}[/.-]{YEAR}|\d{{1,2}}/\d{{1,2}}/\d{{2}}|{YEAR}-\d{{1,2}}-\d{{1,2}})"
# How a case introduces someone's age right after their name: "a 54-year-old", "aged 47", "54,".
AGE = r"(?:(?:(?:a|an|aged)[ \t]{1,3})?\d{1,3}[- ]?(?:year|yr)s?[- ]old\b|aged[ \t]{1,3}\d{1,3}\b|\d{1,3},)"
# Sentence openers that are capitalised but no name ("In March, a 54-year-old ...").
NOT_NAMES = r"(?:In|On|At|By|The|This|That|When|After|Before|During|Since|Then|Later|Here|There|Recently|Previously)\b"

# In order of precedence: where two kinds overlap on a line, the earlier one is reported.
PATTERNS: dict[str, re.Pattern[str]] = {
    "date of birth": re.compile(
        rf"(?i:\bD\.?O\.?B\b\.?|\bdate[ \t]of[ \t]birth\b|\bbirth[ \t]?date\b)[ \t:]{{0,5}}+\S{{1,30}}+"
        rf"|(?i:\bborn(?:[ \t]{{1,3}}(?:on|in))?)[ \t]{{1,3}}(?:{WRITTEN_DATE}|{NUMERIC_DATE}|{YEAR}\b)"),
    "name with title": re.compile(
        rf"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sister)\b\.?[ \t]{{1,3}}{NAME}(?:[ \t]{{1,3}}{NAME}){{0,2}}"),
    "name": re.compile(
        rf"(?i:\b(?:patient(?:'s)?[ \t]name|name)[ \t]{{0,3}}[:=][ \t]{{0,3}}){NAME}(?:[ \t]{{1,3}}{NAME}){{0,2}}"
        rf"|\b(?!{NOT_NAMES}){NAME}(?:[ \t]{{1,3}}{NAME}){{1,2}}(?:,?[ \t]{{1,3}}{AGE}|[ \t]{{0,3}}\(\d{{1,3}}\))"),
    "record number": re.compile(
        r"(?:(?i:\bMRN|\bNHS[ \t](?:no|number)|\b(?:hospital|record|patient|unit|case|clinic|medical[ \t]record)"
        r"[ \t](?:no|number|num|ID|identifier)|\bCHI[ \t]?(?:no|number)?)|\bID)\b\.?[ \t]{0,3}[:#]?[ \t]{0,3}"
        r"[A-Z]{0,3}[-/ ]?\d(?:[ -]?\d){3,11}(?!\d)"),
    "full date": re.compile(rf"\b(?:{NUMERIC_DATE}|{WRITTEN_DATE})(?!\d)"),
    "NHS number": re.compile(r"(?<![\d+])\d{3}[ -]?\d{3}[ -]?\d{4}(?!\d)"),
    "phone number": re.compile(
        r"(?<![\w+])(?:\+\d{1,3}[ -]?(?:\(0\)[ -]?)?\(?\d{1,5}\)?|\(0\d{1,4}\)|0\d{1,4})(?:[ -]?\d{2,6}){1,3}(?!\d)"
        r"|(?<![\w+])(?:\(\d{3}\)[ ]?|\d{3}[-. ])\d{3}[-. ]\d{4}(?!\d)"),
    "e-mail address": re.compile(r"(?<![\w.+-])[\w.+-]{1,64}+@[\w-]{1,63}+(?:\.[\w-]{1,63}+){1,8}+"),
    "postal address": re.compile(
        r"\b\d{1,5}[ \t]{1,3}(?:[A-Z][a-z]{1,20}+[ \t]{1,3}){1,3}(?:Street|St|Road|Rd|Avenue|Ave|Lane|Ln|Drive|"
        r"Close|Way|Crescent|Boulevard|Blvd)\b|\b[A-Z]{1,2}\d[A-Z\d]?[ \t]\d[A-Z]{2}\b"),
}


def _nhs_checksum(text: str) -> bool:
    """An NHS number's tenth digit is a mod-11 check of the first nine, which random digits fail 10 times in 11."""
    digits = [int(ch) for ch in text if ch.isdigit()]
    check = 11 - sum(d * w for d, w in zip(digits, range(10, 1, -1))) % 11
    return check != 10 and check % 11 == digits[9]


def _phone_digits(text: str) -> bool:
    digits = sum(ch.isdigit() for ch in text.replace("(0)", ""))
    return 10 <= digits <= 13


# Checks a match must also pass to count, where the pattern alone would flag ordinary numbers.
VALID: dict[str, Callable[[str], bool]] = {"NHS number": _nhs_checksum, "phone number": _phone_digits}


@dataclass(frozen=True)
class Finding:
    line: int
    kind: str
    text: str

    def __str__(self) -> str:
        return f"line {self.line}: possible {self.kind} {self.text!r}"


def scan_line(line: str) -> list[tuple[int, str, str]]:
    """(start, kind, text) of each likely identifier in one line, left to right. Overlapping matches of
    different kinds are one identifier, reported as the kind that comes first in PATTERNS (a date of birth,
    not also a date); overlaps are found by bisection, so a line of thousands of matches stays linear."""
    kept: list[tuple[list[int], list[int]]] = []  # per kind already scanned: sorted, disjoint starts and ends
    found = []
    for kind, pattern in PATTERNS.items():
        valid = VALID.get(kind)
        starts: list[int] = []
        ends: list[int] = []
        for match in pattern.finditer(line):
            start, end = match.span()
            if (valid and not valid(match.group(0))) or any(_overlaps(s, e, start, end) for s, e in kept):
                continue
            starts.append(start)
            ends.append(end)
            found.append((start, kind, match.group(0)))
        kept.append((starts, ends))
    return sorted(found)


def _overlaps(starts: list[int], ends: list[int], start: int, end: int) -> bool:
    """Whether [start, end) overlaps one of the disjoint spans given by sorted `starts` and `ends`."""
    before = bisect_left(starts, end)  # spans starting before `end`; the last of them ends latest
    return before > 0 and ends[before - 1] > start


def scan(text: str) -> list[Finding]:
    """Every likely identifier in `text`, with its line number (1-based)."""
    return [Finding(number, kind, found) for number, line in enumerate(text.splitlines(), start=1)
            for _, kind, found in scan_line(line)]


def scan_case(case: Case) -> list[Finding]:
    """Every likely identifier in a case's file: all of its text, front matter included (a PDF's extracted text)."""
    path = Path(case.path)
    return scan(case.body if path.suffix.lower() == ".pdf" else path.read_text(encoding="utf-8-sig"))
