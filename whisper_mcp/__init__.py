"""whisper-mcp: a persistent Whisper speech-to-text service over MCP and HTTP."""

__version__ = "0.1.0"
