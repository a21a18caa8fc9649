"""Reading case files: every accepted format, and a clear, named rejection for every unusable file."""

from __future__ import annotations

from pathlib import Path

from bot.cases import load_cases
from bot.lexicon import Lexicon
from conftest import KNOWLEDGE, write_case

LEXICON = Lexicon.load(KNOWLEDGE / "lexicon.yaml")


def minimal_pdf(text: str) -> bytes:
    """A one-page PDF with `text` in Helvetica, built by hand so the test needs no PDF writer."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def test_front_matter_case_is_read_and_names_normalised(tmp_path: Path):
    write_case(tmp_path, id="mmf-case", title="ILD on MMF", organs="ILD, skin", failed="MMF", next="Ofev",
               subtype="dcSSc", outcome="stabilised")
    cases, rejections = load_cases([tmp_path], LEXICON)
    assert rejections == []
    case = cases[0]
    assert (case.id, case.title, case.subtype, case.outcome) == ("mmf-case", "ILD on MMF", "diffuse", "stabilised")
    assert case.organs == ["lung", "skin"]
    assert case.failed_therapies == ["mycophenolate mofetil"] and case.next_therapies == ["nintedanib"]
    assert "## Resistance" in case.body


def test_plain_markdown_text_and_pdf_files_take_id_and_title_from_the_file(tmp_path: Path):
    (tmp_path / "Plain Note.md").write_text("# Renal crisis on dialysis\n\nThe kidneys recovered.\n")
    (tmp_path / "abstract-17.txt").write_text("Nintedanib in a cohort\nFVC decline slowed.\n")
    (tmp_path / "report.pdf").write_bytes(minimal_pdf("Digital ulcers healed after iloprost"))
    cases, rejections = load_cases([tmp_path], LEXICON)
    assert rejections == []
    by_id = {case.id: case for case in cases}
    assert by_id["plain-note"].title == "Renal crisis on dialysis"
    assert by_id["abstract-17"].title == "Nintedanib in a cohort"
    assert by_id["report"].title == "Digital ulcers healed after iloprost"
    assert all(case.organs == [] and case.evidence is None for case in cases)


def test_unusable_files_are_named_with_their_reason_and_the_rest_still_load(tmp_path: Path):
    write_case(tmp_path, id="good-case")
    (tmp_path / "empty.md").write_text("")
    (tmp_path / "binary.txt").write_bytes(b"abc\x00\x01\x02")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    (tmp_path / "unclosed.md").write_text("---\nid: x\ntitle: y\n## Presentation\ntext\n")
    (tmp_path / "bad-yaml.md").write_text("---\nid: [unclosed\ntitle: t\n---\n## Presentation\ntext\n")
    write_case(tmp_path / "more", id="bad-organ", organs="liver")
    write_case(tmp_path / "more", id="bad-outcome", outcome="cured")
    write_case(tmp_path / "dup", id="good-case")
    cases, rejections = load_cases([tmp_path], LEXICON)
    assert [case.id for case in cases] == ["good-case"]
    reasons = {r.path.name if r.path.parent == tmp_path else f"{r.path.parent.name}/{r.path.name}": r.reason
               for r in rejections}
    assert reasons["empty.md"] == "file is empty"
    assert "binary" in reasons["binary.txt"]
    assert "not UTF-8" in reasons["latin1.txt"]
    assert "PDF" in reasons["broken.pdf"]
    assert "no closing '---'" in reasons["unclosed.md"]
    assert "malformed front matter at line" in reasons["bad-yaml.md"]
    assert "field 'organs'" in reasons["more/bad-organ.md"] and "liver" in reasons["more/bad-organ.md"]
    assert "field 'outcome'" in reasons["more/bad-outcome.md"] and "cured" in reasons["more/bad-outcome.md"]
    duplicate = next(r for r in rejections if "duplicate id 'good-case'" in r.reason)
    kept = tmp_path / "good-case.md" if duplicate.path != tmp_path / "good-case.md" else tmp_path / "dup/good-case.md"
    assert duplicate.reason.endswith(str(kept))
    assert all(str(r).startswith(str(r.path)) for r in rejections)
