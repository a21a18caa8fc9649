"""Synthetic case files in the SPEC format, for scale benchmarks: templates filled from the lexicon's
vocabulary so they read like (and compete in retrieval with) the real library."""

from __future__ import annotations

import random
from pathlib import Path

PROBLEMS = {
    "lung": ("interstitial lung disease", ["mycophenolate mofetil", "cyclophosphamide", "rituximab", "nintedanib",
                                           "tocilizumab", "autologous haematopoietic stem cell transplantation"]),
    "skin": ("progressive skin thickening", ["methotrexate", "mycophenolate mofetil", "rituximab", "tocilizumab",
                                             "abatacept", "tofacitinib"]),
    "vascular": ("digital ulcers", ["calcium-channel blockers", "sildenafil", "iloprost", "bosentan",
                                    "botulinum toxin", "digital sympathectomy"]),
    "pulmonary-hypertension": ("pulmonary arterial hypertension", ["ambrisentan", "tadalafil", "macitentan",
                                                                   "riociguat", "selexipag", "epoprostenol"]),
    "kidney": ("scleroderma renal crisis", ["ACE inhibitors", "plasma exchange", "eculizumab", "dialysis"]),
    "gastrointestinal": ("intestinal dysmotility", ["proton pump inhibitors", "prokinetics", "octreotide",
                                                    "rotating antibiotics", "parenteral nutrition"]),
}
OUTCOMES = ["improved", "stabilised", "partial", "worsened", "died"]
SUBTYPES = ["diffuse", "limited", "sine", "overlap"]
ANTIBODIES = ["anti-Scl-70", "anticentromere", "anti-RNA polymerase III"]


def write_synthetic_cases(folder: Path, n: int, seed: int = 11) -> None:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(n):
        organ = rng.choice(list(PROBLEMS))
        problem, therapies = PROBLEMS[organ]
        failed, following = rng.sample(therapies, 2)
        outcome, subtype, antibody = rng.choice(OUTCOMES), rng.choice(SUBTYPES), rng.choice(ANTIBODIES)
        age, months, score = rng.randint(25, 75), rng.randint(3, 48), rng.randint(10, 90)
        case_id = f"synthetic-{number:05d}"
        (folder / f"{case_id}.md").write_text(f"""---
id: {case_id}
title: "Synthetic case {number}: {problem} after {failed}"
subtype: {subtype}
organs: [{organ}]
antibodies: [{antibody}]
failed_therapies: [{failed}]
next_therapies: [{following}]
outcome: {outcome}
evidence: composite-vignette
source: "Synthetic benchmark case generated from templates"
---
## Presentation
A patient in their {age // 10 * 10}s with {subtype} disease and {antibody} antibodies had {problem}.

## Prior treatment
{failed.capitalize()} was given for {months} months.

## Resistance
The {problem} progressed despite {failed}; the marker score moved to {score}.

## Next therapy
The team moved to {following}.

## Outcome
The outcome was recorded as {outcome} after {months + 6} months.

## Teaching points
- Synthetic case {number}: {problem} resistant to {failed} followed by {following}.
""", encoding="utf-8")
