"""The patient-identifier scan (bot/identifiers.py): what it must catch, what clinical text it must leave alone,
and hostile lines that must not stall it (the scan holds the interpreter lock, so a slow one freezes the web app)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bot.cases import load_case
from bot.identifiers import scan, scan_case
from bot.lexicon import Lexicon
from conftest import HELDOUT, KNOWLEDGE, write_case

LEXICON = Lexicon.load(KNOWLEDGE / "lexicon.yaml")

# The variants round two found missed (issue 21, item 9), each with the kind and the whole text to be reported.
MISSED_BEFORE = [
    ("Jane Smith, a 54-year-old teacher, presented with tight skin.", "name", "Jane Smith, a 54-year-old"),
    ("She was born 14 March 1962 in Leeds.", "date of birth", "born 14 March 1962"),
    ("Hospital no: RJ1234567", "record number", "Hospital no: RJ1234567"),
    ("Her mobile is 07700 900123.", "phone number", "07700 900123"),
    ("Her daughter can be reached on +44 20 7946 0958.", "phone number", "+44 20 7946 0958"),
    ("Seen on 3rd March 2021.", "full date", "3rd March 2021"),
    ("Reviewed again on 12 Apr 2021.", "full date", "12 Apr 2021"),
    ("Patient ID: AB-123456", "record number", "Patient ID: AB-123456"),
    ("Mr. Seán O'Connor attended clinic.", "name with title", "Mr. Seán O'Connor"),
    ("Her number, 943 476 5919, was on the referral.", "NHS number", "943 476 5919"),
]

# A larger set of realistic slips: the scan must catch at least 95% of them.
VARIANTS = [text for text, _, _ in MISSED_BEFORE] + [
    "Mrs Jones (DOB: 02/03/1961, MRN 8812345) was seen.",
    "D.O.B. 1/2/1970", "Date of birth: 12.05.1958", "born on 3 June 1975", "She was born in 1962.",
    "Dr Priya Patel referred him.", "Prof. Hans Müller reviewed the CT.", "Miss Aoife Ní Bhriain was reviewed.",
    "Ms McDonald was seen.", "Mx Sam Taylor attended.", "Sister Mary Byrne reviewed her.",
    "Ahmed Khan, aged 47, a baker, had digital ulcers.", "John O'Neill, 61, a retired farmer.",
    "Name: Maria Garcia", "Patient name: Li Wei", "Ring 0161 496 0000 for results.", "Tel (020) 7946 0958",
    "+44 (0)20 7946 0958", "Contact: (555) 123-4567", "Call 555-123-4567.", "+1 555 123 4567",
    "Her NHS no. is 9434765919.", "NHS number 943 476 5919", "MRN: 00123456", "Unit number 4455667",
    "Case number 20210456", "CHI 1234567890", "e-mail jane.doe@example.nhs.uk", "She lives at 12 Baker Street.",
    "Postcode SW1A 1AA", "Admitted 2021-03-05.", "Reviewed on March 3, 2021.", "Follow-up on 05/06/21.",
    "On the 21st of June 2019 she relapsed.", "Dated 1 Jan 2020.", "Seen 14/11/2019 in clinic.",
]

# Clinical text full of numbers, capitals and dates that identify nobody.
CLINICAL = [
    "The FDA approved tocilizumab for SSc-ILD in March 2021, and EULAR 2023 says it may be considered.",
    "focuSSced enrolled 210 patients with mRSS 10-35; FVC % predicted changed by -0.1 against -6.3 at 48 weeks.",
    "Mycophenolate 1.5 g twice daily, then 3 g/day; DLCO 45% and FEV1/FVC 0.78 at 12 months.",
    "NT-proBNP 1200 pg/mL, mean PAP 32 mmHg, PVR 4.2 WU; 6MWD 350 m in 2019 and 280 m in 2020.",
    "Anti-Scl-70 and anti-RNA polymerase III antibodies; CD4 count 0.4 x 10^9/L; IL-6 raised.",
    "A 54-year-old woman with diffuse SSc presented in her 50s; in this composite vignette, a man in his 40s.",
    "In March, a 54-year-old man was started on rituximab 1 g on days 1 and 15 (SENSCIS, SLS II, ASTIS).",
    "The Medsger severity scale, the Rodnan skin score and the Raynaud Condition Score were recorded.",
    "Creatinine rose from 88 to 310 umol/L over 10 days; eGFR 25 mL/min/1.73 m2; ACE inhibitor captopril.",
    "Phase 2 trial NCT01234567 (n = 120) reported a 0.5 mg/kg dose on weeks 0, 2, 4 and 8.",
    "Dr. and Mrs. are titles; the Doctor reviewed her on day 3 of admission.",
    "Cyclophosphamide 500 mg/m2 monthly for 6 months, then azathioprine 2 mg/kg/day from month 7.",
]


@pytest.mark.parametrize(("text", "kind", "shown"), MISSED_BEFORE)
def test_the_variants_round_two_found_missed_are_reported_whole_and_by_kind(text, kind, shown):
    assert [(f.kind, f.text) for f in scan(text)] == [(kind, shown)]


def test_at_least_95_percent_of_realistic_identifier_variants_are_caught():
    missed = [text for text in VARIANTS if not scan(text)]
    assert len(missed) <= len(VARIANTS) * 0.05, missed


def test_one_identifier_is_one_finding_of_its_most_specific_kind():
    found = [(f.kind, f.text) for f in scan("Mrs Jones (DOB: 02/03/1961, NHS number 943 476 5919) was seen.")]
    assert found == [("name with title", "Mrs Jones"), ("date of birth", "DOB: 02/03/1961,"),
                     ("record number", "NHS number 943 476 5919")]


@pytest.mark.parametrize("text", CLINICAL)
def test_clinical_text_is_not_flagged(text):
    assert scan(text) == []


def test_the_shipped_and_held_out_cases_raise_no_finding():
    files = sorted([*(KNOWLEDGE / "cases").iterdir(), *(HELDOUT / "cases").iterdir()])
    assert len(files) > 60
    flagged = {path.name: [str(f) for f in scan_case(load_case(path, LEXICON))] for path in files}
    assert {name: found for name, found in flagged.items() if found} == {}


HOSTILE_UNITS = ["a.", "a", "1 ", "0 ", "1-", "a@", "a.a@b", "Mr Ab ", "Jane Smith, ", "DOB ", "1/1/2000 ",
                 "+4 ", "12 Ab ", "3rd March ", "ID 1", "9434765919 ", "é"]


def test_a_160_kb_hostile_line_is_scanned_in_a_blink_and_still_finds_the_identifier_at_its_end(tmp_path: Path):
    """Before: the scan was quadratic, and one line of `a.` x 80,000 took 121 s to ingest (minutes for the
    shapes below together). A generous bound: all of them, 160 KB each, within 10 s on a loaded machine."""
    path = write_case(tmp_path, id="hostile-line", presentation="a." * 80_000 + " MRN 8812345")
    started = time.perf_counter()
    findings = scan_case(load_case(path, LEXICON))
    for unit in HOSTILE_UNITS:
        scan((unit * (160_000 // len(unit) + 1))[:160_000])
    assert time.perf_counter() - started < 10
    assert [(f.kind, f.text) for f in findings] == [("record number", "MRN 8812345")]
