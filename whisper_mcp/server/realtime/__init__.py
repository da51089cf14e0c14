"""Live transcription over OpenAI's Realtime transcription protocol
(``GET /v1/realtime?intent=transcription``): the protocol's events
(``protocol``), incoming audio (``audio``, ``g711``), turns found by voice
activity (``turns``), the text two hypotheses agree on (``agreement``) and
one connection's state (``session``). The WebSocket itself is
``server.http.realtime``; the service's side (sharing the model with batch
jobs, the session limit, keeping sessions as jobs) is ``server.live``."""
