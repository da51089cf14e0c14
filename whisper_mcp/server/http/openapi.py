"""The OpenAPI 3.1 description of the REST routes, served at /openapi.json."""

from __future__ import annotations

import functools
import json
from typing import Any

from whisper_mcp import __version__
from whisper_mcp.diarization.references import MAX_KNOWN_SPEAKERS, MAX_NAME_CHARS, MAX_REFERENCE_FIELD_BYTES
from whisper_mcp.formats import FORMATS
from whisper_mcp.options import (
    MAX_BEAM_SIZE,
    MAX_HOTWORDS_CHARS,
    MAX_PROMPT_CHARS,
    MAX_SPEAKERS,
    PRIORITIES,
    SPEAKER_HINTS,
)
from whisper_mcp.queue.jobs import JOB_ID_PATTERN, JOB_STATUSES
from whisper_mcp.server.audio_urls import MAX_URL_CHARS
from whisper_mcp.server.results import Health, JobPage, JobRecord, Models

_REF = "#/components/schemas/"

_JOB_ID = {"type": "string", "pattern": JOB_ID_PATTERN}
_STATUSES = list(JOB_STATUSES)
# The answers' shapes, from the records the service and the MCP tools use.
_RECORDS: dict[str, Any] = {"Job": JobRecord, "JobList": JobPage, "Health": Health, "Models": Models}


def _record_schemas() -> dict[str, Any]:
    """Each of ``_RECORDS`` as a component schema, and the records they refer to."""
    from pydantic import TypeAdapter  # on the first /openapi.json: not in every server's start

    renamed = {record.__name__: name for name, record in _RECORDS.items()}
    schemas: dict[str, Any] = {}
    for name, record in _RECORDS.items():
        schema = TypeAdapter(record).json_schema(ref_template=_REF + "{model}")
        schemas.update((key, value) for key, value in schema.pop("$defs", {}).items() if key not in renamed)
        schemas[name] = schema
    # A record named inside another (JobPage's jobs) points at its component name here.
    text = json.dumps(schemas)
    for old, new in renamed.items():
        text = text.replace(f'"{_REF}{old}"', f'"{_REF}{new}"')
    return json.loads(text)


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(description: str, ref: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


_COMMON = {"401": _error("Missing or wrong bearer token (when the server has one).")}
_UPLOAD_ERRORS = {
    "400": _error("Invalid input: not audio, empty, truncated, bad option."),
    "409": _error("job_id already used by different audio."),
    "413": _error("Upload larger than the limit."),
    "507": _error("Server disk nearly full."),
}
_JOB_PATH_PARAM = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
_FORMAT_PARAM = {"name": "format", "in": "query", "schema": {"type": "string", "enum": list(FORMATS), "default": "txt"}}

_SUBMISSION_PROPERTIES: dict[str, Any] = {
    "filename": {"type": "string", "maxLength": 255},
    "job_id": _JOB_ID,
    "model": {"type": "string", "description": "See GET /models."},
    "language": {"type": "string", "description": "Code or name; 'auto' or empty: detect."},
    "task": {"type": "string", "enum": ["transcribe", "translate"]},
    "initial_prompt": {"type": "string", "maxLength": MAX_PROMPT_CHARS},
    "temperature": {"type": "number", "minimum": 0, "maximum": 1},
    "beam_size": {"type": "integer", "minimum": 1, "maximum": MAX_BEAM_SIZE},
    "word_timestamps": {"type": "boolean"},
    "vad_filter": {"type": "boolean", "description": "Decode only the speech VAD finds (default: the server's)."},
    "hotwords": {
        "type": "string",
        "maxLength": MAX_HOTWORDS_CHARS,
        "description": "Words to favour (ctranslate2 engine; 400 on others).",
    },
    "priority": {"type": "string", "enum": list(PRIORITIES)},
    "callback_url": {"type": "string", "format": "uri"},
    "audio_url": {
        "type": "string",
        "format": "uri",
        "maxLength": MAX_URL_CHARS,
        "description": "Instead of file: an http(s) URL the job fetches the recording from.",
    },
    "cache": {"type": "boolean", "default": True},
    "diarize": {"type": "boolean", "default": False, "description": "Label each segment with its speaker."},
    **{
        name: {"type": "integer", "minimum": 1, "maximum": MAX_SPEAKERS, "description": "Needs diarize=true."}
        for name in SPEAKER_HINTS
    },
    # Repeated parts, in the same order (the brackets are optional).
    "known_speaker_names[]": {
        "type": "array",
        "maxItems": MAX_KNOWN_SPEAKERS,
        "items": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS},
        "description": "With diarize=true: names of known speakers, each with a reference below. "
        "A found speaker whose voice matches one is labelled with its name.",
    },
    "known_speaker_references[]": {
        "type": "array",
        "maxItems": MAX_KNOWN_SPEAKERS,
        "items": {"type": "string", "pattern": "^data:", "maxLength": MAX_REFERENCE_FIELD_BYTES},
        "description": "One per name, in the same order: a data URL ('data:audio/wav;base64,...') "
        "of 2-10 s of that speaker alone.",
    },
}


@functools.cache  # built from constants: once per process
def openapi_spec() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "whisper-mcp",
            "version": __version__,
            "description": "Persistent Whisper speech-to-text service. MCP clients use /mcp (streamable HTTP).",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                        }
                    },
                },
                **_record_schemas(),
                "Submission": {
                    "type": "object",
                    "description": "Exactly one of file and audio_url.",
                    "oneOf": [{"required": ["file"]}, {"required": ["audio_url"]}],
                    "properties": {"file": {"type": "string", "format": "binary"}, **_SUBMISSION_PROPERTIES},
                },
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/transcribe": {
                "post": {
                    "summary": "Queue a recording",
                    "requestBody": {
                        "required": True,
                        "content": {"multipart/form-data": {"schema": {"$ref": "#/components/schemas/Submission"}}},
                    },
                    "responses": {"202": _json("Queued (or cached: completed).", "Job"), **_UPLOAD_ERRORS, **_COMMON},
                }
            },
            "/status/{job_id}": {
                "get": {
                    "summary": "A job's status; the transcript once completed (waiting_for_upload while "
                    "the one-time upload URL issued for it is unused)",
                    "parameters": [
                        _JOB_PATH_PARAM,
                        _FORMAT_PARAM,
                        {
                            "name": "wait",
                            "in": "query",
                            "description": "Seconds to wait for the job to end before answering (a long poll); "
                            "at most max_wait_seconds (default 50)",
                            "schema": {"type": "number", "minimum": 0, "default": 0},
                        },
                    ],
                    "responses": {
                        "200": _json("The job.", "Job"),
                        "400": _error("Bad format or wait."),
                        "404": _error("Unknown job."),
                        **_COMMON,
                    },
                }
            },
            "/download/{job_id}": {
                "get": {
                    "summary": "The transcript, or a live session's kept audio",
                    "parameters": [
                        _JOB_PATH_PARAM,
                        {
                            "name": "format",
                            "in": "query",
                            "description": "A transcript format, or wav: the audio a live session opened "
                            "with store=audio kept (16 kHz mono 16-bit PCM).",
                            "schema": {"type": "string", "enum": [*FORMATS, "wav"], "default": "txt"},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "Transcript; with format=wav, the recording as an attachment.",
                            "content": {
                                "text/plain": {"schema": {"type": "string"}},
                                "audio/wav": {"schema": {"type": "string", "format": "binary"}},
                            },
                        },
                        "400": _error("Bad format."),
                        "404": _error("Unknown job, or not completed; format=wav: the job kept no audio."),
                        **_COMMON,
                    },
                }
            },
            "/jobs": {
                "get": {
                    "summary": "List jobs",
                    "parameters": [
                        {"name": "status", "in": "query", "schema": {"type": "string", "enum": _STATUSES}},
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                        {
                            "name": "offset",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
                        },
                    ],
                    "responses": {"200": _json("A page of jobs.", "JobList"), "400": _error("Bad filter."), **_COMMON},
                }
            },
            "/jobs/{job_id}": {
                "get": {
                    "summary": "A job's status",
                    "parameters": [_JOB_PATH_PARAM, _FORMAT_PARAM],
                    "responses": {
                        "200": _json("The job.", "Job"),
                        "400": _error("Bad format."),
                        "404": _error("Unknown job."),
                        **_COMMON,
                    },
                },
                "delete": {
                    "summary": "Cancel a job",
                    "parameters": [_JOB_PATH_PARAM],
                    "responses": {
                        "200": _json("Cancelled, or cancel requested.", "Job"),
                        "404": _error("Unknown job."),
                        "409": _error("Already ended."),
                        **_COMMON,
                    },
                },
            },
            "/jobs/{job_id}/events": {
                "get": {
                    "summary": "Follow a job as server-sent events: queued, progress, segment, then status",
                    "parameters": [_JOB_PATH_PARAM],
                    "responses": {
                        "200": {
                            "description": "An event stream that ends with the job's final status.",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        "404": _error("Unknown job."),
                        **_COMMON,
                    },
                }
            },
            "/models": {
                "get": {
                    "summary": "Available and loaded models",
                    "responses": {"200": _json("Models.", "Models"), **_COMMON},
                }
            },
            "/health": {"get": {"summary": "Readiness", "responses": {"200": _json("Health.", "Health"), **_COMMON}}},
            "/livez": {
                "get": {
                    "summary": "Liveness (no token needed)",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "Alive.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        "503": {
                            "description": "The inference thread is gone: restart the process.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                    },
                }
            },
            "/v1/audio/transcriptions": {"post": _openai_audio("Transcribe (OpenAI-compatible; waits for the result)")},
            "/v1/audio/translations": {"post": _openai_audio("Translate into English (OpenAI-compatible)")},
            "/v1/models": {
                "get": {
                    "summary": "Models, OpenAI-style",
                    "responses": {
                        "200": {
                            "description": "List.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        **_COMMON,
                    },
                }
            },
            "/v1/models/{model}": {
                "get": {
                    "summary": "One model, OpenAI-style",
                    "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {
                        "200": {
                            "description": "Model.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        "404": {"description": "Unknown model."},
                        **_COMMON,
                    },
                }
            },
            "/v1/realtime/client_secrets": {
                "post": {
                    "summary": "A single-use client secret for the live transcription socket (OpenAI-compatible)",
                    "requestBody": {
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "expires_after": {
                                            "type": "object",
                                            "properties": {
                                                "anchor": {"type": "string", "enum": ["created_at"]},
                                                "seconds": {"type": "integer", "minimum": 10, "maximum": 600},
                                            },
                                        },
                                        "session": {
                                            "type": "object",
                                            "description": "A transcription session, as session.update takes it.",
                                        },
                                    },
                                }
                            }
                        }
                    },
                    "responses": {
                        "200": {
                            "description": "The secret (value, expires_at) and the session it opens.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        "400": {"description": "A field it cannot take, in OpenAI's error shape."},
                        "413": {"description": "A body over 64 KiB."},
                        **_COMMON,
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {
                            "description": "Text format.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        **_COMMON,
                    },
                }
            },
            "/upload/{secret}": {
                "put": _one_time_upload(),
                "post": _one_time_upload(),
            },
        },
    }


def _openai_audio(summary: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "model": {"type": "string"},
                            "language": {"type": "string"},
                            "prompt": {"type": "string"},
                            "response_format": {
                                "type": "string",
                                "enum": ["json", "text", "srt", "vtt", "verbose_json"],
                            },
                            "temperature": {"type": "number", "minimum": 0, "maximum": 1},
                        },
                    }
                }
            },
        },
        "responses": {
            "200": {
                "description": "The transcript.",
                "content": {
                    "application/json": {"schema": {"type": "object"}},
                    "text/plain": {"schema": {"type": "string"}},
                },
            },
            "400": {"description": "Invalid input (OpenAI error shape)."},
            "413": {"description": "Too large."},
            **_COMMON,
        },
    }


def _one_time_upload() -> dict[str, Any]:
    return {
        "summary": "Send a file to a one-time upload URL (from the create_upload_url MCP tool)",
        "security": [],
        "parameters": [{"name": "secret", "in": "path", "required": True, "schema": {"type": "string"}}],
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
                },
            },
        },
        "responses": {"202": _json("Queued.", "Job"), "404": _error("Unknown, expired or used URL."), **_UPLOAD_ERRORS},
    }
