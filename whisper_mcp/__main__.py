import sys

from whisper_mcp.cli import main

sys.exit(main())
