"""Reading case files (front-matter Markdown, plain Markdown/text, PDF) into validated Case objects.

A file that cannot be used becomes a Rejection naming the file and the reason; the rest still load.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from bot.lexicon import Lexicon

ORGANS = ("skin", "lung", "pulmonary-hypertension", "kidney", "heart", "gastrointestinal", "vascular", "musculoskeletal")
Subtype = Literal["diffuse", "limited", "sine", "overlap", "unknown"]
Outcome = Literal["improved", "stabilised", "partial", "worsened", "died", "unknown"]
Evidence = Literal["seed", "published-report", "trial-derived", "composite-vignette"]
SUFFIXES = (".md", ".markdown", ".txt", ".pdf")
MAX_FILE_BYTES = 5_000_000
# A case report runs to a few pages; a PDF of more is a book or a bomb, and its text is not read page by page.
MAX_PDF_PAGES = 100
# libyaml's loader where PyYAML was built with it: the same safe loading, ~5x faster on a 10,000-case library.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class Case(BaseModel):
    """One case: its front matter (or what a plain file allows) and its narrative text."""

    id: str = Field(pattern=r"^[a-z0-9-]+$")
    title: str = Field(min_length=1)
    subtype: Subtype = "unknown"
    organs: list[str] = []
    antibodies: list[str] = []
    failed_therapies: list[str] = []
    next_therapies: list[str] = []
    outcome: Outcome = "unknown"
    evidence: Evidence | None = None
    source: str = ""
    body: str
    path: str
    content_hash: str

    @field_validator("organs", "antibodies", "failed_therapies", "next_therapies", mode="before")
    @classmethod
    def _listify(cls, value: object) -> object:
        if value is None:
            return []
        return [value] if isinstance(value, str) else value

    @field_validator("title", "source", "antibodies", "failed_therapies", "next_therapies")
    @classmethod
    def _no_markers(cls, value: str | list[str]) -> str | list[str]:
        """Front matter is data: a `[case-id]` in a title or a therapy must not read as a citation in an answer."""
        return [defused(item) for item in value] if isinstance(value, list) else defused(value)

    @field_validator("organs")
    @classmethod
    def _known_organs(cls, organs: list[str]) -> list[str]:
        unknown = [o for o in organs if o not in ORGANS]
        if unknown:
            raise ValueError(f"unknown organ {unknown[0]!r}; expected one of {', '.join(ORGANS)}")
        return organs

    @property
    def therapies(self) -> list[str]:
        return [*self.failed_therapies, *self.next_therapies]

    def summary(self) -> str:
        """A one-line account of the case from its metadata: what failed, what followed, how it ended."""
        parts = []
        if self.failed_therapies:
            parts.append("failed " + ", ".join(self.failed_therapies))
        if self.next_therapies:
            parts.append(("then " if parts else "treated with ") + ", ".join(self.next_therapies))
        if self.outcome != "unknown":
            parts.append(f"outcome: {self.outcome}")
        return "; ".join(parts)


def defused(text: str) -> str:
    """Brackets as parentheses, as in quoted case text: `[x]` becomes `(x)`, which no marker pattern matches."""
    return text.replace("[", "(").replace("]", ")")


@dataclass(frozen=True)
class Rejection:
    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{shown(self.path)}: {self.reason}"


def shown(path: str | Path) -> str:
    """A path as a report line shows it: control characters escaped, so a file name holding a newline cannot
    start a line of its own (a forged "rejected ..." or "check ..." line)."""
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", str(path))


def case_files(sources: Iterable[Path]) -> tuple[list[Path], list[Rejection]]:
    """Case files under the source folders (a `cases/` subfolder is used when present), sorted, and a Rejection
    naming each entry with a case suffix that cannot be read as one: a symbolic link leading outside its folder
    (a link to /etc/passwd must not be served), a link loop, a FIFO or device; and each folder that cannot be
    listed. Links to folders are not followed."""
    files: set[Path] = set()
    refused: list[Rejection] = []
    for source in sources:
        root = source / "cases" if (source / "cases").is_dir() else source
        if root.is_file():
            files.add(root)
            continue

        def unreadable(error: OSError) -> None:
            refused.append(Rejection(Path(error.filename), f"cannot read folder ({error.strerror or error})"))

        inside = root.resolve()
        for folder, _, names in os.walk(root, onerror=unreadable):
            for name in names:
                path = Path(folder) / name
                if path.suffix.lower() not in SUFFIXES:
                    continue
                problem = _not_a_case_file(path, inside)
                if problem:
                    refused.append(Rejection(path, problem))
                else:
                    files.add(path)
    return sorted(files), refused


def _not_a_case_file(path: Path, inside: Path) -> str | None:
    """Why the entry at `path` is not a regular case file within `inside`, or None."""
    if path.is_symlink():
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError) as error:  # a loop raises RuntimeError before Python 3.13, OSError after
            return f"broken or looping symbolic link ({getattr(error, 'strerror', None) or error})"
        if not target.is_relative_to(inside):
            return f"symbolic link to {shown(target)}, outside {shown(inside)}; copy the file into the folder instead"
    try:
        mode = path.stat().st_mode
    except OSError as error:
        return f"cannot read file ({error.strerror or error})"
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a folder" if stat.S_ISDIR(mode) else "a device or socket"
        return f"{kind}, not a regular file"
    return None


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file, however each was spelled (relative to the folder ingest ran in, or not)."""
    return Path(a).resolve() == Path(b).resolve()


def slug(name: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", name.lower())).strip("-") or "case"


def load_cases(sources: Iterable[Path], lexicon: Lexicon, max_chars: int | None = None,
               owners: Mapping[str, str] | None = None) -> tuple[list[Case], list[Rejection]]:
    """Every usable case under `sources`, and a Rejection for each file that is not.

    Files sharing an id: the one `owners` names for it (the file the index already has it from) keeps it, else
    the first in name order; a newcomer can never take over a case by sorting first."""
    owners = owners or {}
    loaded: list[Case] = []
    paths, rejections = case_files(sources)
    for path in paths:
        try:
            loaded.append(load_case(path, lexicon, max_chars))
        except CaseError as error:
            rejections.append(Rejection(path, str(error)))
    keeper: dict[str, Case] = {}
    for case in loaded:
        held, owner = keeper.get(case.id), owners.get(case.id)
        if held is None or (owner and same_file(owner, case.path) and not same_file(owner, held.path)):
            keeper[case.id] = case
    cases = [case for case in loaded if keeper[case.id] is case]
    rejections += [Rejection(Path(case.path), f"duplicate id {case.id!r}, already used by "
                                              f"{shown(keeper[case.id].path)}")
                   for case in loaded if keeper[case.id] is not case]
    return cases, sorted(rejections, key=lambda r: r.path)


class CaseError(ValueError):
    """Why a file cannot be used as a case."""


def load_case(path: Path, lexicon: Lexicon, max_chars: int | None = None) -> Case:
    """The case in one file, or CaseError saying why not; `max_chars` caps its text (settings.max_case_chars)."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise CaseError(f"cannot read file ({error.strerror or error})") from error
    if not raw.strip():
        raise CaseError("file is empty")
    if len(raw) > MAX_FILE_BYTES:
        raise CaseError(f"file is larger than {MAX_FILE_BYTES // 1_000_000} MB")
    digest = hashlib.sha256(raw).hexdigest()
    if path.suffix.lower() == ".pdf":
        return _plain_case(path, _pdf_text(path, max_chars), digest)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise CaseError(f"not UTF-8 text (byte {error.start})") from error
    if "\x00" in text:
        raise CaseError("binary content, not text")
    _check_size(len(text), max_chars)
    text = text.replace("\r\n", "\n")
    if text.startswith("---\n"):
        return _front_matter_case(path, text, digest, lexicon)
    return _plain_case(path, text, digest)


def _check_size(chars: int, max_chars: int | None) -> None:
    if max_chars is not None and chars > max_chars:
        raise CaseError(f"{chars:,} characters of text is too large to be a case (the limit is {max_chars:,}, "
                        "settings.max_case_chars / CASEBOT_MAX_CASE_CHARS); split it into cases")


def _pdf_text(path: Path, max_chars: int | None) -> str:
    """The PDF's text, page by page. pypdf raises many kinds of error on a hostile file (a decompression bomb
    hits its LimitReachedError, a malformed one anything from KeyError to RecursionError); every one of them
    means this file cannot be read, never that the ingest should stop."""
    from pypdf import PdfReader

    pages: list[str] = []
    chars = 0
    try:
        reader = PdfReader(path)
        if len(reader.pages) > MAX_PDF_PAGES:
            raise CaseError(f"PDF has {len(reader.pages)} pages; a case file has at most {MAX_PDF_PAGES}")
        for page in reader.pages:
            pages.append(page.extract_text() or "")
            chars += len(pages[-1]) + 2
            _check_size(chars, max_chars)
    except CaseError:
        raise
    except Exception as error:  # any parser failure (see above) rejects this file alone
        raise CaseError(f"corrupt or unreadable PDF ({type(error).__name__}: {str(error)[:200]})") from error
    text = "\n\n".join(pages)
    if not text.strip():
        raise CaseError("PDF has no extractable text")
    return text


def _plain_case(path: Path, text: str, digest: str) -> Case:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise CaseError("file has no text")
    heading = next((line for line in lines if line.startswith("#")), None)
    title = (heading or lines[0]).lstrip("#").strip()[:200]
    return Case(id=slug(path.stem), title=title, body=text.strip(), path=str(path), content_hash=digest)


def _front_matter_case(path: Path, text: str, digest: str, lexicon: Lexicon) -> Case:
    end = re.search(r"^---\s*$", text[4:], re.MULTILINE)
    if not end:
        raise CaseError("front matter starts with '---' but has no closing '---' line")
    header, body = text[4 : 4 + end.start()], text[4 + end.end() :]
    try:
        _refuse_aliases(header)
        meta = yaml.load(header, Loader=SAFE_LOADER)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 2}" if mark else ""
        raise CaseError(f"malformed front matter{where}: {getattr(error, 'problem', error)}") from error
    if not isinstance(meta, dict):
        raise CaseError("front matter is not a mapping of fields")
    for field in ("id", "title"):
        if not meta.get(field):
            raise CaseError(f"front matter field '{field}' is missing")
    if not body.strip():
        raise CaseError("case has front matter but no text")
    meta = _normalised(meta, lexicon)
    try:
        return Case(**meta, body=body.strip(), path=str(path), content_hash=digest)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise CaseError(f"field '{field}': {first['msg']} (got {first.get('input')!r})") from error


def _refuse_aliases(header: str) -> None:
    """YAML anchors and aliases let a 2 KB header expand to gigabytes (a "billion laughs" bomb); front matter is a
    handful of plain fields and never needs them, so any is refused before the header is loaded."""
    if "&" not in header and "*" not in header:  # neither can appear: skip the token scan
        return
    for token in yaml.scan(header, Loader=SAFE_LOADER):
        if isinstance(token, (yaml.AnchorToken, yaml.AliasToken)):
            kind = "anchor" if isinstance(token, yaml.AnchorToken) else "alias"
            raise CaseError(f"front matter line {token.start_mark.line + 2} uses a YAML {kind} "
                            f"({'&' if kind == 'anchor' else '*'}{token.value}); write each value out in full")


def _normalised(meta: dict, lexicon: Lexicon) -> dict:
    """Front-matter values mapped to the lexicon's canonical names (MMF -> mycophenolate mofetil)."""
    meta = {key: value for key, value in meta.items() if key not in ("body", "path", "content_hash")}
    for field, group in (("organs", "organs"), ("antibodies", "antibodies"),
                         ("failed_therapies", "therapies"), ("next_therapies", "therapies")):
        values = meta.get(field)
        if isinstance(values, str):
            values = [values]
        if isinstance(values, list):
            meta[field] = [lexicon.canonical(group, str(v)) or str(v) for v in values if v is not None]
    if isinstance(meta.get("subtype"), str):
        meta["subtype"] = lexicon.canonical("subtypes", meta["subtype"]) or meta["subtype"]
    for field in ("id", "title", "source"):  # a list or mapping stays as it is, for the model to refuse
        if meta.get(field) is not None and not isinstance(meta[field], (list, dict)):
            meta[field] = str(meta[field]).strip()
    return meta
