"""Soak: many conversations and questions through `POST /api/ask` of one `casebot serve`, over loopback, with the
server's resident memory (RSS) read at the start, the middle (half the conversations, or half the time allowed,
whichever comes first) and the end. Bounded memory means the end within 10% of the middle (issue 21):
conversations, caches and the side index have stated bounds.

    .venv/bin/python bench/soak.py --db .casebot/chroma [--conversations 10000] [--questions 50000]
                                   [--clients 2] [--max-minutes 20]

Each conversation asks its share of the questions in turn: a clinical question, follow-ups that lean on it
("What came after that?"), now and then an off-topic one. Conversation ids are new each time, so the server sees
every conversation once, as it would many users. The run stops early at --max-minutes and says so. Nothing here
asserts; it prints a Markdown table (append it to bench/results.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bot.settings import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "bench"))
from first_answer import free_port  # noqa: E402

OPENERS = ["Renal crisis not responding to ACE inhibitors: options?",
           "Lung fibrosis progressing on mycophenolate: what was added?",
           "Raynaud's and PAH not responding to ERAs: what was used next?",
           "Watermelon stomach causing anaemia in SSc: what was done?",
           "Myocarditis despite MMF in ATA-positive dcSSc",
           "SIBO with weight loss in dcSSc"]
FOLLOW_UPS = ["What came after that?", "Which autoantibody did the patient have?", "How did it end?",
              "Was anything stopped because of side effects?"]
# Loading the model and calibrating the gate takes ~1 min on an idle 2-core machine, far longer on a busy one.
START_TIMEOUT_S = 900
OFF_TOPIC = ["What is the capital of France?", "Best lasagne recipe please"]


def rss_mb(pid: int) -> float:
    """Resident memory of the server process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def ask(url: str, question: str, conversation: str) -> tuple[int, float]:
    """HTTP status and seconds for one question."""
    body = json.dumps({"question": question, "conversation": conversation}).encode()
    request = urllib.request.Request(f"{url}api/ask", data=body, headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    return status, time.perf_counter() - started


def conversation_questions(number: int, per_conversation: int) -> list[str]:
    """The questions of conversation `number`: an opener, follow-ups, an off-topic question every seventh."""
    questions = [OPENERS[number % len(OPENERS)]]
    for turn in range(1, per_conversation):
        pool = OFF_TOPIC if (number + turn) % 7 == 0 else FOLLOW_UPS
        questions.append(pool[(number + turn) % len(pool)])
    return questions


@dataclass
class Progress:
    done_questions: int = 0
    done_conversations: int = 0
    errors: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def start_server(db: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    server = subprocess.Popen([sys.executable, "-m", "bot", "serve", "--port", str(port), "--db", str(db)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=PROJECT_ROOT)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"casebot serve exited with {server.returncode}")
        try:
            if ask(url, OPENERS[0], "soak-warm-up")[0] == 200:
                return server, url
        except OSError:
            pass
        time.sleep(1)
    server.terminate()
    raise SystemExit(f"casebot serve did not answer within {START_TIMEOUT_S} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True, help="an existing index (casebot ingest --db ...)")
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--questions", type=int, default=50_000, help="questions in all, shared among conversations")
    parser.add_argument("--clients", type=int, default=2, help="client threads asking at once")
    parser.add_argument("--max-minutes", type=float, default=20.0, help="stop after this long, whatever is left")
    args = parser.parse_args()
    if args.conversations < 1 or args.questions < args.conversations or args.clients < 1:
        raise SystemExit("soak: need --conversations >= 1, --questions >= --conversations and --clients >= 1")
    per_conversation = args.questions // args.conversations
    server, url = start_server(args.db.resolve())
    progress = Progress()
    samples: dict[str, tuple[int, float]] = {}
    started = time.monotonic()
    stop = started + args.max_minutes * 60
    numbers = iter(range(args.conversations))
    take = threading.Lock()
    try:
        samples["start"] = (0, rss_mb(server.pid))

        def client() -> None:
            while time.monotonic() < stop:
                with take:
                    number = next(numbers, None)
                if number is None:
                    return
                conversation = f"soak-{number}-{uuid.uuid4().hex[:8]}"
                for question in conversation_questions(number, per_conversation):
                    status, seconds = ask(url, question, conversation)
                    with progress.lock:
                        progress.done_questions += 1
                        progress.latencies.append(seconds)
                        if status != 200:
                            progress.errors[status] = progress.errors.get(status, 0) + 1
                with progress.lock:
                    progress.done_conversations += 1
                    halfway = (progress.done_conversations >= args.conversations // 2
                               or time.monotonic() >= started + args.max_minutes * 30)
                    if "middle" not in samples and halfway:
                        samples["middle"] = (progress.done_questions, rss_mb(server.pid))

        threads = [threading.Thread(target=client, daemon=True) for _ in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        samples["end"] = (progress.done_questions, rss_mb(server.pid))
    finally:
        server.terminate()
        server.wait(timeout=30)
    minutes = (time.monotonic() - started) / 60
    cut = progress.done_conversations < args.conversations
    middle = samples.get("middle", samples["end"])
    print(f"### Soak: {progress.done_conversations:,} conversations, {progress.done_questions:,} questions through "
          f"POST /api/ask ({args.clients} clients, loopback), {minutes:.1f} min"
          + (f"; stopped at --max-minutes {args.max_minutes:g} of {args.conversations:,} asked" if cut else ""))
    print()
    print("| point | questions answered | server RSS MB |")
    print("|---|---|---|")
    for point in ("start", "middle", "end"):
        if point in samples:
            print(f"| {point} | {samples[point][0]:,} | {samples[point][1]:.0f} |")
    print()
    growth = (samples["end"][1] - middle[1]) / middle[1]
    latencies = sorted(progress.latencies)
    p95 = latencies[int(0.95 * (len(latencies) - 1))] if latencies else 0.0
    print(f"End against middle: {growth:+.1%}. Answer p50 {statistics.median(latencies) * 1000:.0f} ms, "
          f"p95 {p95 * 1000:.0f} ms; non-200 answers: "
          + (", ".join(f"{n} x {status}" for status, n in sorted(progress.errors.items())) or "none") + ".")


if __name__ == "__main__":
    main()
