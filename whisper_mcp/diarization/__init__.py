"""Speaker diarization: who spoke when (``senko``), and the pure step that gives
each transcribed word, and so each segment, its speaker (``assign``).

``senko`` imports torch and the diarization library; only the inference thread
imports it, when a job first asks for diarization.
"""

# The diarizer's name in the engine's model pool, /models and /health.
DIARIZER_NAME = "senko"
DIARIZER_SOURCE = "diarizer"
