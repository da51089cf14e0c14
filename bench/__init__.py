"""whisper-mcp benchmarks, run by ``bench/run.py`` (see bench/README.md).

A package so that the sections (``bench.sections``) share the modules here.
"""
