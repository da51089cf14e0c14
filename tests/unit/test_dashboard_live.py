"""The dashboard's Live panel in a real Chromium with a fake microphone (a WAV
file), against the real app, its access guard and client secrets, with a
fake realtime socket behind the guard: what the page sends (a client secret,
never the token; PCM16 mono 24 kHz at the pace it is spoken) and how it
shows what comes back. The real socket and model hear the same microphone
in tests/e2e/test_live_e2e.py."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from whisper_mcp.config import Settings
from whisper_mcp.server.app import build_service, create_app
from whisper_mcp.server.http.realtime_auth import IDENTITY_STATE

from fakes import FakeEngine
from helpers import CHROMIUM, CHROMIUM_ARGS, FIXTURES, fake_microphone, free_port

pytestmark = pytest.mark.slow

TOKEN = "live-panel-token"
SECOND = 24000 * 2  # bytes of one second of PCM16 mono 24 kHz


class FakeSocket:
    """The server side of the protocol, answering each second of audio with
    an utterance that says how loud it was; records what the page sent."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.identities: list[Any] = []
        self.audio = bytearray()
        self.first_audio_at: float | None = None

    async def endpoint(self, websocket: WebSocket) -> None:
        identity = websocket.scope["state"][IDENTITY_STATE]  # the access guard's
        self.identities.append(identity)
        await websocket.accept(subprotocol=identity.subprotocol)
        items, buffered = 0, bytearray()

        async def utterance(audio: bytes) -> None:
            nonlocal items
            items += 1
            item = f"item_{items}"
            peak = max(abs(int.from_bytes(audio[i : i + 2], "little", signed=True)) for i in range(0, len(audio), 2))
            await websocket.send_json({"type": "input_audio_buffer.committed", "item_id": item})
            for delta in ("heard", " something"):
                event = {"type": "conversation.item.input_audio_transcription.delta", "item_id": item, "delta": delta}
                await websocket.send_json(event)
            done = {"type": "conversation.item.input_audio_transcription.completed", "item_id": item}
            await websocket.send_json({**done, "transcript": f"Utterance {items} peak {peak}."})

        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            event = json.loads(message["text"])
            self.events.append({k: v for k, v in event.items() if k != "audio"})
            if event["type"] == "input_audio_buffer.append":
                chunk = base64.b64decode(event["audio"])
                self.first_audio_at = self.first_audio_at or time.monotonic()
                self.audio += chunk
                buffered += chunk
                if len(buffered) >= SECOND:
                    await utterance(bytes(buffered))
                    buffered.clear()
            elif event["type"] == "input_audio_buffer.clear":
                await websocket.send_json({"type": "input_audio_buffer.cleared"})
            elif event["type"] == "input_audio_buffer.commit":
                if buffered:
                    await utterance(bytes(buffered))
                    buffered.clear()
                else:
                    error = {"code": "input_audio_buffer_commit_empty", "message": "empty"}
                    await websocket.send_json({"type": "error", "error": error})


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, FakeSocket]]:
    fake = FakeSocket()
    port = free_port()
    settings = Settings.from_env({}, storage=tmp_path_factory.mktemp("storage"), port=port, token=TOKEN)
    service = build_service(settings, FakeEngine())
    app = create_app(settings, service)
    app.router.routes.insert(0, WebSocketRoute("/v1/realtime", fake.endpoint))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}", fake
    server.should_exit = True
    thread.join(10)
    service.queue.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is missing: install Debian's chromium package (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    args = [*CHROMIUM_ARGS, *fake_microphone(FIXTURES / "speech.wav"), "--autoplay-policy=no-user-gesture-required"]
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=args, headless=True)
        yield b
        b.close()


@pytest.fixture
def tab(browser: Any, site: tuple[str, FakeSocket]) -> Iterator[tuple[Any, list[str]]]:
    """A fresh page on the dashboard, the token entered; and the page's errors
    (console errors but the 401s from before the token was entered)."""
    from playwright.sync_api import expect

    context = browser.new_context()
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" and "401" not in msg.text else None)
    page.goto(site[0] + "/")
    page.get_by_label("Token", exact=True).fill(TOKEN)
    page.get_by_role("button", name="Use token").click()
    expect(page.locator("#h-loaded")).to_have_text("yes")
    yield page, problems
    context.close()


def test_the_microphone_streams_with_a_client_secret_and_text_appears(
    tab: tuple[Any, list[str]], site: tuple[str, FakeSocket]
) -> None:
    from playwright.sync_api import expect

    page, problems = tab
    fake = site[1]
    sockets: list[Any] = []
    page.on("websocket", lambda socket: sockets.append(socket))
    page.get_by_label("Live language", exact=True).fill("en")
    page.get_by_role("button", name="Start microphone").click()
    expect(page.get_by_role("button", name="Stop")).to_be_visible(timeout=20_000)
    final = page.locator("#live-text p.final")
    expect(final.nth(1)).to_contain_text("Utterance 2 peak", timeout=20_000)
    assert fake.first_audio_at is not None
    # Read together: Stop sends what the page still buffers, after this moment.
    streamed, received = time.monotonic() - fake.first_audio_at, len(fake.audio)
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("#live-status")).to_have_text("Microphone off.", timeout=20_000)
    expect(page.get_by_role("button", name="Start microphone")).to_be_enabled()

    # A client secret on the socket, carrying the panel's session; never the token.
    assert len(sockets) == 1 and sockets[0].url.endswith("/v1/realtime?intent=transcription")
    identity = fake.identities[-1]
    assert identity.via == "client_secret" and identity.subprotocol == "realtime"
    assert identity.session["audio"]["input"]["transcription"] == {"language": "en"}
    assert TOKEN not in json.dumps(fake.events)
    kinds = [e["type"] for e in fake.events]
    assert kinds[0] == "session.update" and kinds[-2:] == ["input_audio_buffer.commit", "input_audio_buffer.clear"]
    # The real microphone's pace: 24 kHz of PCM16 (48 KB/s), give or take the buffering.
    rate = received / 2 / streamed
    assert 18000 < rate < 30000, rate
    # Speech, not silence: the fixture peaks well above the noise floor.
    texts = final.all_inner_texts()
    assert any(int(t.rsplit(" ", 1)[1].rstrip(".")) > 3000 for t in texts), texts
    assert not page.locator("#live-text p.partial").count()
    assert not problems, problems


def test_a_used_secret_and_the_bare_token_cannot_be_replayed(site: tuple[str, FakeSocket]) -> None:
    """What a page's script could read (the subprotocol it sent) is useless afterwards."""
    import httpx
    import websockets.sync.client
    from websockets.exceptions import InvalidStatus

    url, _ = site
    made = httpx.post(url + "/v1/realtime/client_secrets", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    ws_url = url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
    protocols = ["realtime", "openai-insecure-api-key." + made["value"]]
    with websockets.sync.client.connect(ws_url, subprotocols=protocols) as socket:  # type: ignore[arg-type]
        assert socket.subprotocol == "realtime"
    with pytest.raises(InvalidStatus) as raised:
        websockets.sync.client.connect(ws_url, subprotocols=protocols)  # type: ignore[arg-type]
    assert raised.value.response.status_code == 401 and b"already used" in raised.value.response.body


def test_the_upload_form_sends_prompt_vad_hotwords_and_speaker_hints(
    tab: tuple[Any, list[str]], site: tuple[str, FakeSocket]
) -> None:
    import httpx
    from playwright.sync_api import expect

    url = site[0]
    page, problems = tab
    page.get_by_label("Audio file", exact=True).set_input_files(str(FIXTURES / "short.wav"))
    page.get_by_label("Prompt", exact=True).fill("Hello, testing.")
    page.get_by_label("Skip silence", exact=True).select_option("true")
    exactly = page.get_by_label("exactly")
    expect(exactly).to_be_disabled()  # speaker hints go with diarize only
    page.get_by_label("Label speakers (diarize)").check()
    exactly.fill("2")
    page.get_by_label("Reuse an earlier identical transcript").uncheck()
    # Hotwords on an engine without them: the service's refusal, in its words.
    page.get_by_label("Hotwords", exact=True).fill("Kubernetes")
    page.get_by_role("button", name="Transcribe").click()
    message = page.locator("#upload-message")
    expect(message).to_contain_text("hotwords is not supported")
    page.get_by_label("Hotwords", exact=True).fill("")
    page.get_by_role("button", name="Transcribe").click()
    expect(message).to_contain_text("Queued:")
    job_id = message.locator(".jobid").inner_text()
    record = httpx.get(f"{url}/jobs/{job_id}", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    options = record["options"]
    assert options["initial_prompt"] == "Hello, testing." and options["vad_filter"] is True
    assert options["diarize"] is True and options["num_speakers"] == 2
    assert "min_speakers" not in options and "max_speakers" not in options
