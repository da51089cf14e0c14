"""The browser dashboard at /, driven in a real headless Chromium (Debian's
``chromium`` package) through Playwright, against the real server and model.

Playwright's own browser downloads are never used: the browser is
/usr/bin/chromium, launched by path.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from helpers import CHROMIUM, CHROMIUM_ARGS, FIXTURES, LONG_AUDIO, ServerProcess, free_port, words

pytestmark = pytest.mark.e2e

# The page's rates (dashboard.html): every live job streamed, the list is read
# every SLOW_POLL_MS; a job without a stream makes it every second.
SLOW_POLL_MS = 6000
SPEECH_WORDS = {"transcription", "services", "model", "loaded", "meeting", "morning", "report", "friday"}
JOB_TIMEOUT_MS = 180_000


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is missing: install Debian's chromium package (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


class Page:
    """A fresh browser context and page, recording script errors and CSP violations."""

    def __init__(self, browser: object) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 1000}, accept_downloads=True)  # type: ignore[attr-defined]
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        self.page.on(
            "console",
            lambda msg: (
                self.problems.append(f"console: {msg.text}")
                if msg.type == "error" and "Content Security Policy" in msg.text
                else None
            ),
        )

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tab(browser: object) -> Iterator[Page]:
    t = Page(browser)
    yield t
    t.close()
    assert not t.problems, t.problems


def screenshot(page: object, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
    artifacts = os.environ.get("WHISPER_MCP_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(artifacts) / name)
    return path


def submit(page: object, audio: Path, *, priority: str = "normal", word_timestamps: bool = False) -> str:
    """Fill the upload form as a person would and return the new job's id."""
    from playwright.sync_api import expect

    page.get_by_label("Audio file", exact=True).set_input_files(str(audio))  # type: ignore[attr-defined]
    page.get_by_label("Model", exact=True).select_option("tiny.en")  # type: ignore[attr-defined]
    page.get_by_label("Language", exact=True).fill("en")  # type: ignore[attr-defined]
    page.get_by_label("Priority", exact=True).select_option(priority)  # type: ignore[attr-defined]
    page.get_by_label("Word timestamps").set_checked(word_timestamps)  # type: ignore[attr-defined]
    # A fresh transcription each time, not the transcript cache of an earlier test.
    page.get_by_label("Reuse an earlier identical transcript").uncheck()  # type: ignore[attr-defined]
    message = page.locator("#upload-message")  # type: ignore[attr-defined]
    # The page hides the previous answer as soon as the form is sent.
    page.get_by_role("button", name="Transcribe").click()  # type: ignore[attr-defined]
    expect(message).to_be_visible()
    expect(message).to_contain_text("Queued:")
    return message.locator(".jobid").inner_text()


def test_dashboard_upload_watch_and_download(
    tab: Page, server: ServerProcess, client: httpx.Client, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page = tab.page
    response = page.goto(server.url + "/")
    assert response is not None and response.status == 200
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "unsafe-eval" not in csp and "frame-ancestors 'none'" in csp

    # Health and models, fetched by the page itself.
    expect(page.locator("#h-loaded")).to_have_text("yes")
    expect(page.locator("#overall")).to_have_text("ready")
    expect(page.locator("#h-device")).to_have_text(client.get("/health").json()["device"])
    expect(page.locator("#models li", has_text="tiny.en")).to_contain_text("loaded")
    expect(page.locator("#f-model option[value='tiny.en']")).to_have_count(1)

    job_id = submit(page, FIXTURES / "speech.wav", priority="urgent", word_timestamps=True)
    row = page.locator(f'#jobs tr[data-job-id="{job_id}"]')
    expect(row).to_be_visible()
    expect(row).to_have_attribute("data-status", "completed", timeout=JOB_TIMEOUT_MS)
    expect(row.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
    expect(row).to_contain_text("done")
    expect(row).to_contain_text("speech.wav")
    expect(row).to_contain_text("tiny.en")
    expect(row.locator("td.num").first).to_have_text(re.compile(r"^\d+ s$"))  # audio seconds
    expect(row.get_by_role("button", name=f"Cancel job {job_id}")).to_have_count(0)

    # The txt link opens the transcript.
    with page.expect_popup() as popup_info:
        row.get_by_role("link", name=f"txt transcript of {job_id}").click()
    popup = popup_info.value
    popup.wait_for_load_state()
    assert len(SPEECH_WORDS & words(popup.locator("body").inner_text())) >= 6
    popup.close()

    # The other formats behind the links, with the word timings asked for in the form.
    for fmt in ("json", "srt", "vtt"):
        href = row.get_by_role("link", name=f"{fmt} transcript of {job_id}").get_attribute("href")
        assert href == f"/download/{job_id}?format={fmt}"
        body = page.request.get(server.url + href)
        assert body.ok, (fmt, body.status)
        if fmt == "json":
            assert "words" in json.loads(body.text())["segments"][0]
        else:
            assert "-->" in body.text()

    # The in-page viewer shows the same text.
    row.get_by_role("button", name=f"View transcript of {job_id}").click()
    expect(page.locator("#viewer")).to_be_visible()
    assert len(SPEECH_WORDS & words(page.locator("#viewer-text").inner_text())) >= 6

    shot = screenshot(page, tmp_path, "dashboard.png")
    assert shot.stat().st_size > 10_000


def test_dashboard_live_progress_and_cancel(tab: Page, server: ServerProcess, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page = tab.page
    page.goto(server.url + "/")
    expect(page.locator("#h-loaded")).to_have_text("yes")

    long_id = submit(page, LONG_AUDIO)
    long_row = page.locator(f'#jobs tr[data-job-id="{long_id}"]')
    expect(long_row).to_have_attribute("data-status", "processing", timeout=JOB_TIMEOUT_MS)
    # A second job waits behind it, and is cancelled from its row while queued.
    short_id = submit(page, FIXTURES / "short.wav")
    short_row = page.locator(f'#jobs tr[data-job-id="{short_id}"]')
    expect(short_row).to_have_attribute("data-status", "queued")
    expect(short_row).to_contain_text("in queue")
    short_row.get_by_role("button", name=f"Cancel job {short_id}").click()
    expect(short_row).to_have_attribute("data-status", "cancelled")
    expect(short_row.get_by_role("button", name=f"Cancel job {short_id}")).to_have_count(0)

    # The running job's bar moves after its first 30 s window, with an ETA,
    # in the row and in the health panel, without reloading the page.
    expect(long_row).to_contain_text("ETA", timeout=JOB_TIMEOUT_MS)
    progress = int(long_row.get_by_role("progressbar").get_attribute("aria-valuenow") or 0)
    assert 0 < progress < 100
    expect(page.locator("#h-processing")).to_contain_text(long_id)
    screenshot(page, tmp_path, "dashboard-processing.png")

    long_row.get_by_role("button", name=f"Cancel job {long_id}").click()
    expect(long_row).to_have_attribute("data-status", re.compile("^(cancelled|completed)$"), timeout=JOB_TIMEOUT_MS)
    if long_row.get_attribute("data-status") == "completed":
        # It finished before the cancel arrived; the page must say so.
        expect(page.locator("#upload-message")).to_contain_text("already ended")
    expect(page.locator("#h-processing")).to_have_text("idle")


# Each change to a job's row, as the page shows it: (time, job, status,
# progress bar value, text so far), recorded in the page on every DOM mutation,
# so a state that lasted a moment is seen however slowly the test looks.
RECORD_ROWS = """() => {
  performance.setResourceTimingBufferSize(100000);
  window.__seen = [];
  const last = {};
  const record = () => {
    for (const tr of document.querySelectorAll("#jobs tr[data-job-id]")) {
      const id = tr.dataset.jobId;
      const bar = tr.querySelector("[role=progressbar]");
      const text = document.querySelector(`tr[data-partial-for="${id}"] .partial-text`);
      const state = [id, tr.dataset.status, Number(bar.getAttribute("aria-valuenow") || 0), text ? text.textContent : null];
      const key = JSON.stringify(state);
      if (last[id] !== key) { last[id] = key; window.__seen.push([performance.now(), ...state]); }
    }
  };
  new MutationObserver(record).observe(document.getElementById("jobs"),
    { subtree: true, childList: true, attributes: true, characterData: true });
}"""
LIST_POLLS = """() => performance.getEntriesByType("resource")
  .filter((e) => new URL(e.name).pathname === "/jobs").map((e) => e.startTime)"""


def test_dashboard_streams_progress_and_text_so_far(
    tab: Page, server: ServerProcess, client: httpx.Client, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page = tab.page
    events: list[str] = []
    page.on("request", lambda r: events.append(r.url) if r.url.endswith("/events") else None)
    page.goto(server.url + "/")
    expect(page.locator("#h-loaded")).to_have_text("yes")
    page.evaluate(RECORD_ROWS)

    # Two long jobs: the second waits in the queue, so the list is watched
    # across two jobs' decoding with every live job on its own stream.
    first = submit(page, LONG_AUDIO)
    second = submit(page, LONG_AUDIO)
    for job_id in (first, second):
        row = page.locator(f'#jobs tr[data-job-id="{job_id}"]')
        expect(row).to_have_attribute("data-status", "completed", timeout=JOB_TIMEOUT_MS)
    expect(page.locator(f'tr[data-partial-for="{first}"]')).to_have_count(0)  # the links replace it
    screenshot(page, tmp_path, "dashboard-streamed.png")

    seen = page.evaluate("window.__seen")
    final = words(client.get(f"/download/{first}", params={"format": "txt"}).text)
    for job_id in (first, second):
        assert any(url.endswith(f"/jobs/{job_id}/events") for url in events), events
        mine = [s for s in seen if s[1] == job_id]
        running = [s for s in mine if s[2] == "processing"]
        # Text appeared while the job was still being decoded, growing, each
        # time words of the final transcript.
        texts = [s[4] for s in running if s[4]]
        assert len(set(texts)) >= 2, mine
        assert all(words(t) <= final for t in texts), (texts, final)
        # The bar moved while it ran.
        assert len({s[3] for s in running if 0 < s[3] < 100}) >= 2, mine

    # The list was read at the slow rate while the streams carried progress:
    # a 1 s poll would read it about once a second.
    start = min(s[0] for s in seen if s[1] == first and s[2] == "processing")
    end = min(s[0] for s in seen if s[1] == second and s[2] == "completed")
    polls = [t for t in page.evaluate(LIST_POLLS) if start < t < end]
    # Up to 3 more: the page rereads the list when a job starts or ends.
    assert len(polls) <= 3 + (end - start) / SLOW_POLL_MS, (len(polls), end - start)


@contextmanager
def chunked_server(pieces: list[bytes]) -> Iterator[str]:
    """A loopback server answering every GET with ``pieces`` as an event
    stream, each written and flushed on its own so that the browser reads
    them as separate chunks; yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.end_headers()
            for piece in pieces:
                self.wfile.write(piece)
                self.wfile.flush()
                time.sleep(0.05)  # a separate read for each piece

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/events"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_dashboard_parses_event_frames(tab: Page, server: ServerProcess) -> None:
    """Frames as the spec allows them: CRLF and CR line endings, comments,
    data over several lines, no space after the colon, unknown events, all in
    pieces cut anywhere (inside a field name, between CR and LF, inside a UTF-8
    character). A stream that ends early is retried, and its segments replace
    (not repeat) the text."""
    from playwright.sync_api import expect

    page = tab.page
    job = {
        "job_id": "framed-job", "status": "processing", "progress": 0.4, "filename": "framed.wav",
        "model": "tiny.en", "language": "en", "priority": "normal", "options": {}, "audio_seconds": 60,
        "created_at": 1_700_000_000, "started_at": 1_700_000_001, "finished_at": None, "attempts": 1,
    }  # fmt: skip
    body = (
        ": keep-alive\r\n\r\n"
        'event: progress\r\ndata: {"job_id": "framed-job", "status": "processing",\r\n'
        'data:  "progress": 0.4, "eta_seconds": 75, "segments_done": 2}\r\n\r\n'
        'event: segment\rdata:{"id": 0, "start": 0, "end": 2, "text": " alpha"}\r\r'
        "event: segment\n: a comment inside an event\n"
        'data: {"id": 1, "start": 2, "end": 4,\ndata: "text": "beta café gamma "}\n\n'
        "event: unknown\ndata: {}\n\n"
        "event: segment\n\n"  # no data: no event
    ).encode()
    cuts = sorted(
        [
            4,  # inside the comment
            body.index(b'"processing",\r\n') + 14,  # between CR and LF, inside one event's data
            body.index(b"progress") + 3,  # inside the event name
            body.index(b"\rdata:") + 1,  # after a lone CR
            body.index(b"\r\r") + 1,  # between the CRs ending an event
            body.index("é".encode()) + 1,  # inside a two-byte character
            body.index(b"ent: unknown"),  # inside a field name
        ]
    )
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    assert b"".join(pieces) == body and all(pieces) and pieces[2].endswith(b"\r") and pieces[3].startswith(b"\n")

    page.route("**/jobs?limit=50", lambda r: r.fulfill(json={"jobs": [job], "total": 1, "next_offset": None}))
    page.route("**/status/framed-job", lambda r: r.fulfill(status=404, json={"error": {"message": "no"}}))
    with chunked_server(pieces) as stream_url:
        # The page asks its own server; the request goes on to the chunking one.
        page.route("**/jobs/framed-job/events", lambda r: r.continue_(url=stream_url))
        page.goto(server.url + "/")

        row = page.locator('#jobs tr[data-job-id="framed-job"]')
        # Only the stream tells the ETA (the list has none; the status route is refused).
        expect(row).to_contain_text("40% · ETA 1:15")
        expect(row.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "40")
        text = page.get_by_role("region", name="Text so far of framed-job")
        summary = page.locator('tr[data-partial-for="framed-job"] summary')
        expect(text).to_have_text("alpha beta café gamma")
        expect(summary).to_have_text("Text so far · 2 segments")
        # The stream ended without a status: the page reconnects, and the
        # replayed segments replace the text. (A third stream starts only
        # after the second one has been read.)
        for _ in range(2):
            with page.expect_request("**/jobs/framed-job/events"):
                pass
        expect(text).to_have_text("alpha beta café gamma")
        expect(summary).to_have_text("Text so far · 2 segments")
        page.unroute_all(behavior="ignoreErrors")


def test_dashboard_asks_for_the_token(browser: object, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    token = "dashboard-secret-token"
    srv = ServerProcess(tmp_path / "storage", tmp_path / "server.log", "--token", token)
    srv.start(headers={"Authorization": f"Bearer {token}"})
    tab = Page(browser)
    try:
        page = tab.page
        # The page itself is public; its data is not.
        response = page.goto(srv.url + "/")
        assert response is not None and response.status == 200
        assert page.request.get(srv.url + "/health").status == 401
        auth = page.locator("#auth")
        expect(auth).to_be_visible()
        expect(page.locator("#h-loaded")).to_have_text("–")

        field = page.get_by_label("Token", exact=True)
        field.fill("wrong-token")
        page.get_by_role("button", name="Use token").click()
        expect(page.locator("#auth-message")).to_contain_text("refused")
        expect(page.locator("#h-loaded")).to_have_text("–")

        field.fill(token)
        page.get_by_role("button", name="Use token").click()
        expect(page.locator("#h-loaded")).to_have_text("yes")
        expect(auth).to_be_hidden()
        assert page.evaluate("sessionStorage.getItem('whisper-mcp-token')") == token

        # Kept for the tab: a reload needs no prompt.
        page.reload()
        expect(page.locator("#h-loaded")).to_have_text("yes")
        expect(auth).to_be_hidden()

        # Uploads and downloads carry the token too.
        job_id = submit(page, FIXTURES / "short.wav")
        row = page.locator(f'#jobs tr[data-job-id="{job_id}"]')
        expect(row).to_have_attribute("data-status", "completed", timeout=JOB_TIMEOUT_MS)
        with page.expect_download() as download_info:
            row.get_by_role("link", name=f"txt transcript of {job_id}").click()
        download = download_info.value
        assert download.suggested_filename == f"{job_id}.txt"
        text = Path(download.path()).read_text()
        assert {"hello", "world"} <= words(text), text
        screenshot(page, tmp_path, "dashboard-token.png")

        # A running job's event stream carries the token too.
        with page.expect_request(lambda r: r.url.endswith("/events")) as events_info:
            long_id = submit(page, LONG_AUDIO)
        events = events_info.value
        assert events.url == f"{srv.url}/jobs/{long_id}/events"
        assert events.headers.get("authorization") == f"Bearer {token}"
        assert events.response().status == 200
        long_row = page.locator(f'#jobs tr[data-job-id="{long_id}"]')
        long_row.get_by_role("button", name=f"Cancel job {long_id}").click()
        expect(long_row).to_have_attribute("data-status", re.compile("^(cancelled|completed)$"), timeout=JOB_TIMEOUT_MS)

        # Forgetting the token brings the prompt back.
        page.get_by_role("button", name="Forget token").click()
        expect(auth).to_be_visible()
        assert page.evaluate("sessionStorage.getItem('whisper-mcp-token')") is None
    finally:
        tab.close()
        srv.stop()
    assert not tab.problems, tab.problems
