"""Adding one case to the library from the web app: checked as ingest checks it (loader, vocabulary,
duplicate id, patient identifiers) and refused when its text is keyword stuffing, shown back for confirmation,
then written into the library folder and indexed incrementally, so it is answerable at once.

Nothing half-written is left behind: the file goes under a name ingest ignores, is renamed into place
whole, and is removed again if indexing it fails."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from bot.audit import stuffing
from bot.cases import SUFFIXES, Case, load_cases, slug
from bot.identifiers import scan_case
from bot.index import CaseIndex, IngestReport
from bot.lexicon import Lexicon
from bot.settings import Settings

# Likely identifiers named in a refusal; a file with thousands gets the first ones and a count.
SHOWN_FINDINGS = 20
SECTIONS = ("Presentation", "Prior treatment", "Resistance", "Next therapy", "Outcome", "Teaching points")


class IntakeError(ValueError):
    """Why a file cannot be added; the library is unchanged."""


@dataclass(frozen=True)
class Draft:
    """A checked case, not yet in the library: `filename` is the name it will be written under."""

    filename: str
    data: bytes
    case: Case


def check(filename: str, data: bytes, settings: Settings, lexicon: Lexicon, existing: set[str]) -> Draft:
    """The case in `data`, loaded exactly as ingest would load the file; IntakeError names what is wrong."""
    name = Path(filename).name
    suffix = Path(name).suffix.lower()
    if suffix not in SUFFIXES:
        raise IntakeError(f"{name}: only {', '.join(sorted(SUFFIXES))} case files can be added")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{slug(Path(name).stem)}{suffix}"
        path.write_bytes(data)
        cases, rejections = load_cases([path], lexicon, settings.max_case_chars)
        if rejections:
            raise IntakeError(f"{name}: {rejections[0].reason}")
        case = cases[0]
        findings = scan_case(case)
    if findings:
        more = f"; and {len(findings) - SHOWN_FINDINGS} more" if len(findings) > SHOWN_FINDINGS else ""
        raise IntakeError(f"{name}: possible patient identifiers; remove them and add the file again: "
                          + "; ".join(str(finding) for finding in findings[:SHOWN_FINDINGS]) + more)
    stuffed = stuffing(case.body)
    if stuffed:
        raise IntakeError(f"{name}: {stuffed}; write the case out as a report")
    target = f"{case.id}{suffix}"
    if case.id in existing or (settings.cases_dir / target).exists():
        raise IntakeError(f"{name}: the library already has a case with id {case.id!r}; ids are never reused")
    return Draft(target, data, case.model_copy(update={"path": str(settings.cases_dir / target)}))


def form_markdown(fields: dict[str, object], sections: dict[str, str]) -> str:
    """A case file in the library's format (front matter, then the standard headings) from a filled form."""
    meta = {key: value for key, value in fields.items() if value not in (None, "", [])}
    body = "\n\n".join(f"## {heading}\n{sections[heading].strip()}" for heading in SECTIONS
                       if sections.get(heading, "").strip())
    return f"---\n{yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)}---\n{body}\n"


def add(draft: Draft, settings: Settings, lexicon: Lexicon) -> IngestReport:
    """Writes the checked case into the library folder and indexes it alone (the rest stays as it is)."""
    folder = settings.cases_dir
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / draft.filename
    partial = folder / f".{draft.filename}.part"  # not a case file suffix: ingest never reads it
    partial.write_bytes(draft.data)
    try:
        if target.exists():
            raise IntakeError(f"{target} appeared meanwhile; nothing was added")
        os.replace(partial, target)
        try:
            report = CaseIndex(settings).ingest([target], lexicon, progress=False, prune=False)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
    finally:
        partial.unlink(missing_ok=True)
    if draft.case.id not in report.added:
        target.unlink(missing_ok=True)
        raise IntakeError(f"{draft.filename}: not indexed ({'; '.join(map(str, report.rejected)) or 'unknown reason'})")
    return report
