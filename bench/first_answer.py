"""The first answer after a restart against the ones after it: `casebot serve` is started over an existing
index, and once its page is served the same kind of question is asked through the `ask` API, timed per answer.

    .venv/bin/python bench/first_answer.py --db .casebot/chroma [--root DIR] [--restarts 3] [--pause 15]

`--pause` waits that long after the page appears before the first question, as a clinician reading the page
and typing does (the bot warms up meanwhile); `--root` runs the `bot` package of another checkout (e.g. a
copy of the code before the warm-up) with this interpreter. Nothing here asserts; it prints one line per
restart and the medians.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from gradio_client import Client

from bot.settings import PROJECT_ROOT

QUESTIONS = ["Renal crisis not responding to ACE inhibitors: options?",
             "Lung fibrosis progressing on mycophenolate: what was added?",
             "Raynaud's and PAH not responding to ERAs: what was used next?"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def one_restart(db: Path, root: Path, pause: float) -> tuple[float, list[float]]:
    """Seconds from launch to the page being served, and each question's answer time in order."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    started = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "bot", "serve", "--port", str(port), "--db", str(db)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root)
    try:
        while True:
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                if server.poll() is not None:
                    raise SystemExit(f"casebot serve exited with {server.returncode}")
                time.sleep(0.2)
        page = time.perf_counter() - started
        time.sleep(pause)
        client = Client(url, verbose=False)
        answers = []
        for number, question in enumerate(QUESTIONS):
            asked = time.perf_counter()
            client.predict(question, f"bench-{number}", api_name="/ask")
            answers.append(time.perf_counter() - asked)
        return page, answers
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True, help="an existing index (casebot ingest --db ...)")
    parser.add_argument("--root", type=Path, default=PROJECT_ROOT, help="the checkout whose bot/ is served")
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between the page and the first question")
    args = parser.parse_args()
    pages, firsts, rests = [], [], []
    for restart in range(args.restarts):
        page, answers = one_restart(args.db.resolve(), args.root, args.pause)
        pages.append(page)
        firsts.append(answers[0])
        rests.extend(answers[1:])
        print(f"restart {restart + 1}: page after {page:.1f} s; answers "
              + ", ".join(f"{seconds:.2f} s" for seconds in answers))
    print(f"median: page after {statistics.median(pages):.1f} s, first answer {statistics.median(firsts):.2f} s, "
          f"later answers {statistics.median(rests):.2f} s")


if __name__ == "__main__":
    main()
