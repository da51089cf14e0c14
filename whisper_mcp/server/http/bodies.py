"""Request bodies streamed to disk as they arrive: raw bytes or multipart/form-data.

Nothing is held whole in memory: file data is gathered into ~1 MiB batches
and written off the event loop; small form fields are capped.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from anyio import to_thread
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from whisper_mcp.errors import InvalidInput, PayloadTooLarge
from whisper_mcp.queue.files import IncomingFile, StoredUpload

_BATCH = 1024 * 1024
_MAX_FIELD = 64 * 1024
_MAX_FIELDS = 64

SinkFactory = Callable[[], IncomingFile]


def check_declared_length(request: Request, max_bytes: int, extra_bytes: int = 0) -> int:
    """413 before reading when Content-Length already says too much
    (``extra_bytes``: room for fields allowed to be larger than usual)."""
    raw = request.headers.get("content-length")
    if raw is None:
        return 0
    try:
        length = int(raw)
    except ValueError:
        raise InvalidInput("Content-Length is not a number.") from None
    # Multipart framing adds a little; allow for it.
    if length > max_bytes + _MAX_FIELD * 4 + extra_bytes:
        raise PayloadTooLarge(
            f"The upload ({length // 2**20} MiB) exceeds the limit of {max_bytes // 2**20} MiB. "
            "Split the recording or ask the operator to raise --max-upload-mb."
        )
    return length


def large_fields_bytes(large_fields: Mapping[str, int] | None, count: int = 4) -> int:
    """The room a body gets for ``count`` values of the largest large field
    (the form's other fields stay within the usual allowance)."""
    return count * max((large_fields or {}).values(), default=0)


class _Batcher:
    """Collects bytes and hands ~1 MiB at a time to the sink, off the loop."""

    def __init__(self, sink: IncomingFile) -> None:
        self.sink = sink
        self._parts: list[bytes] = []
        self._size = 0

    @property
    def full(self) -> bool:
        return self._size >= _BATCH

    def add(self, data: bytes) -> bool:
        self._parts.append(data)
        self._size += len(data)
        return self.full

    async def flush(self) -> None:
        if self._parts:
            data = b"".join(self._parts)
            self._parts, self._size = [], 0
            await to_thread.run_sync(self.sink.write, data)


async def read_raw(request: Request, sink: IncomingFile) -> StoredUpload:
    """The whole body is the file (``curl --data-binary @f`` or ``curl -T f``)."""
    batch = _Batcher(sink)
    try:
        async for chunk in request.stream():
            if chunk and batch.add(chunk):
                await batch.flush()
        await batch.flush()
    except ClientDisconnect:
        sink.abort()
        raise InvalidInput("The upload was interrupted before the whole file arrived.") from None
    except BaseException:
        sink.abort()
        raise
    return await to_thread.run_sync(sink.finish)


@dataclass
class _Part:
    headers: dict[str, str] = field(default_factory=dict)
    name: str | None = None
    filename: str | None = None
    value: bytearray = field(default_factory=bytearray)
    batch: _Batcher | None = None
    skip: bool = False


@dataclass
class FormUpload:
    file: StoredUpload | None
    filename: str | None
    fields: dict[str, str]  # the last value of each field
    repeated: dict[str, list[str]] = field(default_factory=dict)  # every value, in order


def _too_large(max_bytes: int | None) -> str:
    return (
        f"The request body exceeds the upload limit of {(max_bytes or 0) // 2**20} MiB (every byte "
        "counts, form fields too). Split the recording or ask the operator to raise --max-upload-mb."
    )


def _too_large_fields(large_fields: Mapping[str, int], room: int) -> str:
    names = " and ".join(sorted({name.removesuffix("[]") for name in large_fields}))
    each = max(large_fields.values())
    return (
        f"The {names} fields exceed their limit of {room / 2**20:.1f} MiB in all "
        f"({room // each} values of at most {each / 2**20:.1f} MiB each)."
    )


async def read_multipart(
    request: Request,
    file_field: str,
    new_sink: SinkFactory,
    wanted: Collection[str] = (),
    *,
    max_bytes: int | None = None,
    large_fields: Mapping[str, int] | None = None,
) -> FormUpload:
    """Parse multipart/form-data; the part named ``file_field`` streams into a sink,
    the ``wanted`` plain fields are kept, and any other part is skipped.

    ``max_bytes`` bounds the whole body, skipped parts included (the sink
    bounds the file alone), with the same allowance for framing and fields
    as ``check_declared_length``. ``large_fields``: wanted fields allowed
    more than the usual 64 KiB (name -> the limit of each value); their bytes
    count against room for 4 of them (``large_fields_bytes``), never against
    the room of the rest, so no other field can use that room."""
    _, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if not boundary:
        raise InvalidInput("multipart/form-data needs a boundary in its Content-Type header.")

    fields: dict[str, str] = {}
    repeated: dict[str, list[str]] = {}
    parts: list[_Part] = []
    header_field = bytearray()
    header_value = bytearray()
    current: list[_Part] = []
    file_part: list[_Part] = []
    ended: list[bool] = []
    large = [0]  # bytes kept for large_fields

    def on_part_begin() -> None:
        current[:] = [_Part()]
        if len(parts) >= _MAX_FIELDS:
            raise InvalidInput(f"Too many form fields (more than {_MAX_FIELDS}).")

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        current[0].headers[header_field.decode("latin-1").lower()] = header_value.decode("latin-1")
        header_field.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        part = current[0]
        _, disp = parse_options_header(part.headers.get("content-disposition", ""))
        part.name = disp.get(b"name", b"").decode("utf-8", "replace") or None
        if b"filename" in disp:
            part.filename = disp[b"filename"].decode("utf-8", "replace")
        if part.name == file_field:
            if file_part:
                raise InvalidInput(f"Send one file per request (more than one '{file_field}' field).")
            part.batch = _Batcher(new_sink())
            file_part.append(part)
        elif part.name not in wanted:
            part.skip = True
        elif part.filename is not None:
            raise InvalidInput(f"Field {part.name!r} must be a plain value, not a file.")
        parts.append(part)

    def on_part_data(data: bytes, start: int, end: int) -> None:
        part = current[0]
        if part.batch is not None:
            part.batch.add(data[start:end])
        elif not part.skip:
            part.value.extend(data[start:end])
            if large_fields and part.name in large_fields:
                large[0] += end - start
            most = (large_fields or {}).get(part.name or "", _MAX_FIELD)
            if len(part.value) > most:
                raise InvalidInput(f"Form field {part.name!r} is too long (over {most // 1024} KiB).")

    def on_part_end() -> None:
        part = current[0]
        if part.batch is None and not part.skip and part.name:
            fields[part.name] = part.value.decode("utf-8", "replace")
            repeated.setdefault(part.name, []).append(fields[part.name])

    def on_end() -> None:
        ended.append(True)

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_end": on_end,
        },
    )
    limit = None if max_bytes is None else max_bytes + _MAX_FIELD * 4
    large_limit = large_fields_bytes(large_fields)
    received = 0
    try:
        async for chunk in request.stream():
            if chunk:
                received += len(chunk)
                # Before parsing, the chunk counts in full unless the room for
                # large fields could still take it; after, exactly.
                if limit is not None and received - large[0] > limit + large_limit:
                    raise PayloadTooLarge(_too_large(max_bytes))
                parser.write(chunk)
                if limit is not None and large_fields and large[0] > large_limit:
                    raise PayloadTooLarge(_too_large_fields(large_fields, large_limit))
                if limit is not None and received - large[0] > limit:
                    raise PayloadTooLarge(_too_large(max_bytes))
                if file_part and file_part[0].batch is not None and file_part[0].batch.full:
                    await file_part[0].batch.flush()
        parser.finalize()
        if not ended:
            raise InvalidInput("The multipart body ended early: the upload was cut off or malformed.")
        if file_part and file_part[0].batch is not None:
            await file_part[0].batch.flush()
            stored = await to_thread.run_sync(file_part[0].batch.sink.finish)
            return FormUpload(stored, file_part[0].filename, fields, repeated)
        return FormUpload(None, None, fields, repeated)
    except MultipartParseError as exc:
        _abort(file_part)
        raise InvalidInput(f"The multipart body is malformed: {exc}") from None
    except ClientDisconnect:
        _abort(file_part)
        raise InvalidInput("The upload was interrupted before the whole file arrived.") from None
    except BaseException:
        _abort(file_part)
        raise


def _abort(file_part: list[_Part]) -> None:
    if file_part and file_part[0].batch is not None:
        file_part[0].batch.sink.abort()
