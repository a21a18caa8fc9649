"""Build or refresh the index from knowledge/: the same as `casebot ingest`."""

import sys

from bot.cli import main

if __name__ == "__main__":
    sys.exit(main(["ingest", *sys.argv[1:]]))
