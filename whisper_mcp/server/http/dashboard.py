"""A browser dashboard at ``/``: one self-contained page over the REST routes.

The page holds no data: it fetches /health, /models and /jobs itself (and
follows each live job's /jobs/{job_id}/events stream), sending
the bearer token the user types when the server answers 401, so ``/`` can be
public while every data route stays protected. Its Live panel streams the
microphone to /v1/realtime with a single-use client secret, never the token.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_PAGE: bytes = Path(__file__).with_name("dashboard.html").read_bytes()
# The Live panel's AudioWorklet module: a file of its own, as a worklet must
# be, served from this origin so 'self' covers it (no blob: scripts).
WORKLET_PATH = "/live-worklet.js"
_WORKLET: bytes = Path(__file__).with_name("live-worklet.js").read_bytes()


def _hashes(tag: str) -> str:
    """CSP source hashes of the page's inline <script>/<style> blocks, so only they may run."""
    text = _PAGE.decode("utf-8")
    blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", text, flags=re.DOTALL)
    if not blocks:
        raise RuntimeError(f"dashboard.html has no inline <{tag}> block")
    return " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(block.encode("utf-8")).digest()).decode() + "'" for block in blocks
    )


# Only this server ('self') and the page's own inline script and style, by hash:
# no other inline code, no external origins, no framing, no plugins.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        f"script-src 'self' {_hashes('script')}",
        f"style-src 'self' {_hashes('style')}",
        # 'self' covers ws: and wss: to this origin too (the Live panel's socket).
        "connect-src 'self'",
        "img-src 'self' data:",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)

_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-cache",
}


async def page(request: Request) -> Response:
    return Response(_PAGE, media_type="text/html; charset=utf-8", headers=_HEADERS)


async def worklet(request: Request) -> Response:
    return Response(
        _WORKLET,
        media_type="text/javascript; charset=utf-8",
        headers={"x-content-type-options": "nosniff", "cache-control": "no-cache"},
    )


def routes() -> list[Route]:
    return [Route("/", page, methods=["GET"]), Route(WORKLET_PATH, worklet, methods=["GET"])]
