"""Scanning case text for likely patient identifiers before it enters the index.

Case files must be de-identified; these patterns catch the usual slips (a titled name, a date of birth, a
record number, a phone number, an e-mail or postal address). They flag for a person to check, so they lean
towards reporting: `casebot ingest --strict` refuses flagged files instead of only listing them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from bot.cases import Case

PATTERNS: dict[str, re.Pattern[str]] = {
    "name with title": re.compile(r"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof)\.?\s+[A-Z][a-z]+(?:\s+[A-Z][a-z]+)?"),
    "date of birth": re.compile(r"\b(?:DOB|D\.O\.B\.|date of birth|born on)\b[\s:]*\S+", re.IGNORECASE),
    "full date": re.compile(r"\b(?:\d{1,2}[/.-]\d{1,2}[/.-](?:19|20)\d{2}|(?:19|20)\d{2}-\d{2}-\d{2})\b"),
    "record number": re.compile(r"\b(?:MRN|NHS (?:no|number)|hospital (?:no|number)|record (?:no|number)|"
                                r"patient ID|case number)\b[\s.:#]*[A-Z]?\d{4,}", re.IGNORECASE),
    "phone number": re.compile(r"(?<!\d)(?:\+\d{1,3}[\s-]?)?(?:\(\d{2,5}\)\s?|\d{3,5}[\s-])\d{3,4}[\s-]\d{3,4}(?!\d)"),
    "e-mail address": re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"),
    "postal address": re.compile(r"\b\d{1,5}\s+(?:[A-Z][a-z]+\s+){1,3}(?:Street|St|Road|Rd|Avenue|Ave|Lane|Ln|"
                                 r"Drive|Close|Way|Crescent|Boulevard|Blvd)\b|\b[A-Z]{1,2}\d[A-Z\d]?\s\d[A-Z]{2}\b"),
}


@dataclass(frozen=True)
class Finding:
    line: int
    kind: str
    text: str

    def __str__(self) -> str:
        return f"line {self.line}: possible {self.kind} {self.text!r}"


def scan(text: str) -> list[Finding]:
    """Every likely identifier in `text`, with its line number (1-based)."""
    findings = []
    for number, line in enumerate(text.splitlines(), start=1):
        for kind, pattern in PATTERNS.items():
            findings.extend(Finding(number, kind, match.group(0)) for match in pattern.finditer(line))
    return findings


def scan_case(case: Case) -> list[Finding]:
    """Every likely identifier in a case's file: all of its text, front matter included (a PDF's extracted text)."""
    path = Path(case.path)
    return scan(case.body if path.suffix.lower() == ".pdf" else path.read_text(encoding="utf-8-sig"))
