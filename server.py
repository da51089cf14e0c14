"""Entry point: ``python server.py [--port ...]`` is ``whisper-mcp serve [--port ...]``."""

import sys

from whisper_mcp.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
