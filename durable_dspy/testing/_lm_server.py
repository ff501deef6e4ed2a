"""A scripted, OpenAI-compatible chat-completions server for tests (stdlib only, starts in milliseconds).

Point DSPy at it with ``dspy.LM("openai/test-model", api_base=server.url + "/v1", api_key="sk-test", cache=False)``
so DSPy's real HTTP path (the native lm15 engine or ``engine="litellm"``) runs against it. Only
``POST /v1/chat/completions`` with ``stream: false`` is supported (plus ``GET /v1/models``); a streaming request
gets a 400.

The default answers are deterministic: they read the output fields from the prompt the way DSPy 3.4's ChatAdapter
and JSONAdapter render it, and derive values from each field's name, declared type and a short hash of the last
user message. ``dspy.ReAct`` prompts get a scripted trajectory that calls each listed tool in turn, then ``finish``.
"""

from __future__ import annotations

import ast
import collections
import contextlib
import hashlib
import json
import math
import re
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = ["FAULT_KINDS", "ChatRequest", "RecordedRequest", "Reply", "ScriptedLMServer", "request_key"]

Reply = dict[str, Any] | str
"""A responder's answer: output field values (formatted for the request's adapter) or a verbatim completion text."""

FAULT_KINDS = frozenset({"500", "503", "429", "400", "401", "403", "404", "context_window", "slow", "hang"})

# OpenAI's error bodies for each injected status; litellm and lm15 classify on status, `code` and message text.
_ERRORS: dict[str, tuple[int, str, str, str | None]] = {
    "500": (500, "The server had an error while processing your request. Sorry about that!", "server_error", None),
    "503": (503, "The engine is currently overloaded, please try again later.", "server_error", None),
    "429": (429, "Rate limit reached for test-model on requests per min (RPM).", "requests", "rate_limit_exceeded"),
    "400": (400, "Invalid value for 'messages'.", "invalid_request_error", None),
    "401": (401, "Incorrect API key provided: sk-test.", "invalid_request_error", "invalid_api_key"),
    "403": (403, "You are not allowed to sample from this model.", "invalid_request_error", None),
    "404": (
        404,
        "The model `test-model` does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
    ),
    "context_window": (
        400,
        "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens. "
        "Please reduce the length of the messages.",
        "invalid_request_error",
        "context_length_exceeded",
    ),
}

_OUTPUT_SECTION = re.compile(r"Your output fields are:\n(.*?)\nAll interactions will be structured", re.S)
_FIELD_LINE = re.compile(r"^\d+\. `(\w+)` \((.*?)\):", re.M)
_NOTE_LINE = re.compile(r"^\{(\w+)\}\s+# note: the value you produce (.*)$", re.M)
_JSON_OUTPUTS_MARKER = "Outputs will be a JSON object with the following fields."
_TOOL_LINE = re.compile(
    r"^\s*\(\d+\) (\S+?)(?:, whose description is <desc>.*</desc>)?\. It takes arguments (.*)\.$", re.M
)
_OBSERVATION = re.compile(r"\[\[ ## observation_(\d+) ## \]\]")
_REACT_FIELDS = ("next_thought", "next_tool_name", "next_tool_args")


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:6]


def request_key(messages: Any) -> str:
    """A stable hash of a request's messages: equal for two sends of the same LM call."""
    blob = json.dumps(messages, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ChatRequest:
    """A chat-completions request as the responder sees it, with DSPy's prompt already read."""

    body: dict[str, Any]
    messages: list[dict[str, Any]]
    output_fields: dict[str, str]
    """Output field name -> type as DSPy renders it ("str", "int", "list[str]", "Literal['a', 'b']", "Person")."""
    is_json: bool
    """True for a JSONAdapter prompt (answer with a JSON object), False for ChatAdapter (``[[ ## f ## ]]`` markers)."""
    tools: list[str]
    """ReAct tools listed in the prompt, in order, ``finish`` included; empty outside ReAct."""
    step: int
    """ReAct step: how many observations the trajectory in the prompt already holds."""
    key: str
    """``request_key(messages)``."""
    user_text: str = ""
    """The last user message's text."""
    index: int = 0
    """Which of the request's ``n`` choices is being answered."""
    tool_args: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Tool name -> its JSON arg schema (property name -> schema)."""
    notes: dict[str, str] = field(default_factory=dict, repr=False)
    """Output field name -> DSPy's "the value you produce ..." note (type constraint, JSON schema)."""

    @classmethod
    def parse(cls, body: dict[str, Any], *, index: int = 0) -> ChatRequest:
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        system = "\n".join(_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer"))
        user_text = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")

        output_fields: dict[str, str] = {}
        section = _OUTPUT_SECTION.search(system)
        if section:
            output_fields = {name: type_name for name, type_name in _FIELD_LINE.findall(section.group(1))}

        is_json = _JSON_OUTPUTS_MARKER in system or "Respond with a JSON object" in user_text
        format_ = body.get("response_format")
        if isinstance(format_, dict) and format_.get("type") in ("json_object", "json_schema"):
            is_json = True

        notes_text = system
        if _JSON_OUTPUTS_MARKER in system:
            # JSONAdapter renders the notes inside a JSON object, so decode it to read them as ChatAdapter's lines.
            start = system.find("{", system.index(_JSON_OUTPUTS_MARKER))
            try:
                block, _ = json.JSONDecoder().raw_decode(system, start)
                notes_text = "\n".join(str(v) for v in block.values()) if isinstance(block, dict) else ""
            except ValueError:
                notes_text = ""
        notes = {name: note.strip() for name, note in _NOTE_LINE.findall(notes_text) if name in output_fields}

        tools: list[str] = []
        tool_args: dict[str, dict[str, Any]] = {}
        if all(f in output_fields for f in _REACT_FIELDS):
            for name, args in _TOOL_LINE.findall(system):
                tools.append(name)
                try:
                    parsed = ast.literal_eval(args)  # DSPy renders Tool.args with str(dict), not JSON
                except (ValueError, SyntaxError):
                    parsed = {}
                tool_args[name] = parsed if isinstance(parsed, dict) else {}
        step = len(set(_OBSERVATION.findall(user_text)))

        return cls(
            body=body,
            messages=messages,
            output_fields=output_fields,
            is_json=is_json,
            tools=tools,
            step=step,
            key=request_key(body.get("messages")),
            user_text=user_text,
            index=index,
            tool_args=tool_args,
            notes=notes,
        )


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received, answered or not."""

    body: Any
    status: int | None
    """HTTP status sent; None when no answer was sent (a ``hang`` fault)."""
    key: str
    time: float
    path: str = ""
    fault: str | None = None


@dataclass
class _Fault:
    kind: str
    remaining: int
    match: str | None
    retry_after: float | None
    delay: float | None


def _number(seed: str) -> int:
    return int(seed[:4], 16) % 1000


def _clamp(value: float, schema: dict[str, Any]) -> float:
    if "minimum" in schema:
        value = max(value, schema["minimum"])
    if "maximum" in schema:
        value = min(value, schema["maximum"])
    return value


def _from_schema(
    schema: Any, name: str, seed: str, defs: dict[str, Any], text: str | None = None, depth: int = 0
) -> Any:
    """A value satisfying a (pydantic-generated) JSON schema, derived from the field name and seed."""
    if not isinstance(schema, dict) or depth > 8:
        return f"{name} {seed}"
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return _from_schema(defs.get(ref.rsplit("/", 1)[1], {}), name, seed, defs, text, depth + 1)
    if "const" in schema:
        return schema["const"]
    if "default" in schema:
        return schema["default"]
    if schema.get("enum"):
        return schema["enum"][int(seed, 16) % len(schema["enum"])]
    for key in ("anyOf", "oneOf", "allOf"):
        options = [o for o in schema.get(key, []) if not (isinstance(o, dict) and o.get("type") == "null")]
        if options:
            return _from_schema(options[0], name, seed, defs, text, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None and "properties" in schema:
        kind = "object"
    if kind == "integer":
        return int(_clamp(_number(seed), schema))
    if kind == "number":
        return _clamp(_number(seed) / 10, schema)
    if kind == "boolean":
        return int(seed, 16) % 2 == 0
    if kind == "null":
        return None
    if kind == "array":
        count = max(int(schema.get("minItems", 0)), min(2, int(schema.get("maxItems", 2))))
        return [
            _from_schema(schema.get("items", {}), f"{name}-{i + 1}", seed, defs, text, depth + 1) for i in range(count)
        ]
    if kind == "object":
        props = schema.get("properties")
        if isinstance(props, dict):
            return {k: _from_schema(v, k, seed, defs, text, depth + 1) for k, v in props.items()}
        extra = schema.get("additionalProperties")
        return (
            {f"{name}_key": _from_schema(extra, name, seed, defs, text, depth + 1)} if isinstance(extra, dict) else {}
        )
    if schema.get("format") == "date-time":
        return "2024-01-01T00:00:00Z"
    if schema.get("format") == "date":
        return "2024-01-01"
    return text if text is not None else f"{name} {seed}"


def _field_value(name: str, note: str | None, seed: str) -> Any:
    if name == "reasoning":
        return f"Reasoning about the request step by step ({seed})."
    if note:
        head, _, rest = note.partition(": ")
        if head == "must adhere to the JSON schema":
            try:
                schema = json.loads(rest)
            except ValueError:
                schema = {}
            return _from_schema(schema, name, seed, schema.get("$defs", {}) if isinstance(schema, dict) else {})
        if head in ("must exactly match (no extra characters) one of", "must be one of"):
            choices = rest.split("; ")
            return choices[int(seed, 16) % len(choices)]
        if note == "must be True or False":
            return int(seed, 16) % 2 == 0
        if note == "must be a single int value":
            return _number(seed)
        if note == "must be a single float value":
            return _number(seed) / 10
    return f"{name} {seed}"


def _format_reply(request: ChatRequest, reply: Reply) -> str:
    if isinstance(reply, str):
        return reply
    if request.is_json:
        return json.dumps(reply, ensure_ascii=False, default=str)
    parts = [f"[[ ## {k} ## ]]\n{v if isinstance(v, str) else json.dumps(v, default=str)}" for k, v in reply.items()]
    return "\n\n".join([*parts, "[[ ## completed ## ]]"])


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a hanging handler must not hold up stop()
    owner: ScriptedLMServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as OpenAI's SDK and lm15 expect
    disable_nagle_algorithm = True  # headers and body go out in two writes: Nagle + delayed ACK cost 40 ms a call
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.split("?")[0].rstrip("/") in ("/v1/models", "/models"):
            model = {"id": "test-model", "object": "model", "created": 0, "owned_by": "scripted"}
            self.send_json(200, {"object": "list", "data": [model]})
        else:
            self.send_json(404, _error_body(f"Unknown path {self.path}", "invalid_request_error", "unknown_url"))

    def do_POST(self) -> None:
        self.server.owner._handle(self)

    def send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client went away; nothing to tell it
            self.close_connection = True


def _error_body(message: str, type_: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class ScriptedLMServer:
    """An OpenAI-compatible chat-completions server with deterministic answers, counting and fault injection.

    ``responder`` may replace the default answers: it receives a ``ChatRequest`` per choice and returns either a
    dict of field values (formatted for the request's adapter) or a raw completion string. If it raises, the
    request gets a 500. ``default_reply(request)`` is the default, for responders that only change some answers.

    ``served`` counts the 200 answers the server produced (whether or not the client was still listening);
    ``requests`` records every request, faulted or not.
    """

    def __init__(
        self,
        *,
        latency: float = 0.0,
        responder: Callable[[ChatRequest], Reply] | None = None,
        react_steps: int = 2,
        host: str = "127.0.0.1",
    ) -> None:
        self.latency = latency
        self.responder = responder
        self.react_steps = react_steps
        self._host = host
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._requests: list[RecordedRequest] = []
        self._served_by_key: collections.Counter[str] = collections.Counter()
        self._served = 0
        self._faults: list[_Fault] = []
        self._ids = 0

    # -- lifecycle

    @property
    def url(self) -> str:
        """``"http://127.0.0.1:PORT"``; append ``/v1`` for an ``api_base``."""
        if self._httpd is None:
            raise RuntimeError("ScriptedLMServer is not started")
        return f"http://{self._host}:{self._httpd.server_address[1]}"

    def start(self) -> ScriptedLMServer:
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _HTTPServer((self._host, 0), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="scripted-lm-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._stopping.set()  # wakes hanging and sleeping handlers
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            connections = list(self._connections)
        # Idle keep-alive connections would otherwise still be answered by their handler threads.
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if thread is not None:
            thread.join(5)
        self._httpd = self._thread = None

    def __enter__(self) -> ScriptedLMServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- counting

    @property
    def served(self) -> int:
        with self._lock:
            return self._served

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def served_by_key(self) -> collections.Counter[str]:
        """How many 200 answers each distinct request (``request_key`` of its messages) got."""
        with self._lock:
            return collections.Counter(self._served_by_key)

    def reset(self) -> None:
        """Forget recorded requests, counts and pending faults (latency and responder stay)."""
        with self._lock:
            self._requests.clear()
            self._served_by_key.clear()
            self._served = 0
            self._faults.clear()

    # -- faults

    def inject(
        self,
        kind: str,
        *,
        times: int = 1,
        match: str | None = None,
        retry_after: float | None = None,
        delay: float | None = None,
    ) -> None:
        """Make the next ``times`` matching requests fail as ``kind`` (see ``FAULT_KINDS``); faults apply in order.

        ``match`` limits the fault to requests whose messages contain that substring. ``retry_after`` adds a
        ``Retry-After`` header to an error answer. ``slow`` sleeps ``delay`` seconds, then answers normally;
        ``hang`` never answers and holds the connection until the client closes it or the server stops.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_KINDS)}")
        if times < 1:
            raise ValueError("times must be at least 1")
        if kind == "slow" and delay is None:
            raise ValueError("a 'slow' fault needs delay= (seconds)")
        with self._lock:
            self._faults.append(_Fault(kind, times, match, retry_after, delay))

    def _take_fault(self, messages: Any) -> _Fault | None:
        text = "\n".join(_text(m.get("content")) for m in messages if isinstance(m, dict)) if messages else ""
        serialized = json.dumps(messages, ensure_ascii=False, default=str)
        with self._lock:
            for fault in self._faults:
                if fault.match is None or fault.match in text or fault.match in serialized:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # -- answering

    def default_reply(self, request: ChatRequest) -> Reply:
        """The deterministic answer the server gives when no responder is set."""
        seed = _short_hash(request.user_text if request.index == 0 else f"{request.user_text}\x00{request.index}")
        if not request.output_fields:
            return f"Scripted reply {seed}."
        if all(f in request.output_fields for f in _REACT_FIELDS):
            return {**self._fill(request, seed), **self._react_step(request)}
        return self._fill(request, seed)

    def _fill(self, request: ChatRequest, seed: str) -> dict[str, Any]:
        return {name: _field_value(name, request.notes.get(name), seed) for name in request.output_fields}

    def _react_step(self, request: ChatRequest) -> dict[str, Any]:
        tools = [t for t in request.tools if t != "finish"]
        if request.step >= self.react_steps or not tools:
            return {"next_thought": "I have what I need.", "next_tool_name": "finish", "next_tool_args": {}}
        tool = tools[request.step % len(tools)]
        text = f"q{request.step}"
        args = {
            arg: _from_schema(schema, arg, _short_hash(text), {}, text=text)
            for arg, schema in request.tool_args.get(tool, {}).items()
        }
        return {"next_thought": f"Step {request.step}: ask {tool}.", "next_tool_name": tool, "next_tool_args": args}

    def _record(self, body: Any, status: int | None, key: str, path: str, fault: str | None) -> None:
        with self._lock:
            self._requests.append(RecordedRequest(body, status, key, time.time(), path, fault))
            if status == 200:
                self._served += 1
                self._served_by_key[key] += 1

    def _handle(self, handler: _Handler) -> None:
        path = handler.path.split("?")[0].rstrip("/")
        raw = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self._record(raw.decode(errors="replace"), 400, "", path, None)
            handler.send_json(
                400, _error_body("We could not parse the JSON body of your request.", "invalid_request_error", None)
            )
            return
        messages = body.get("messages")
        key = request_key(messages)
        if path not in ("/v1/chat/completions", "/chat/completions"):
            self._record(body, 404, key, path, None)
            handler.send_json(
                404, _error_body(f"Unknown request URL: POST {path}.", "invalid_request_error", "unknown_url")
            )
            return

        fault = self._take_fault(messages)
        if self.latency > 0 and self._stopping.wait(self.latency):
            handler.close_connection = True
            return
        if fault is not None and fault.kind == "hang":
            self._record(body, None, key, path, fault.kind)
            self._hang(handler)
            return
        if fault is not None and fault.kind == "slow":
            if self._stopping.wait(fault.delay or 0.0):
                handler.close_connection = True
                return
        elif fault is not None:
            status, message, type_, code = _ERRORS[fault.kind]
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = f"{fault.retry_after:g}"
            param = "messages" if fault.kind == "context_window" else None
            self._record(body, status, key, path, fault.kind)
            handler.send_json(status, _error_body(message, type_, code, param), headers)
            return

        if body.get("stream"):
            self._record(body, 400, key, path, None)
            handler.send_json(
                400,
                _error_body("ScriptedLMServer supports only stream: false.", "invalid_request_error", None, "stream"),
            )
            return
        try:
            payload = self._completion(body, key)
        except Exception as exc:  # a broken responder should fail the test loudly, not hang it
            self._record(body, 500, key, path, None)
            handler.send_json(500, _error_body(f"responder raised {exc!r}", "server_error", None))
            return
        self._record(body, 200, key, path, fault.kind if fault else None)
        handler.send_json(200, payload, {"x-request-id": payload["id"]})

    def _completion(self, body: dict[str, Any], key: str) -> dict[str, Any]:
        n = body.get("n") or 1
        responder = self.responder or self.default_reply
        choices, completion_tokens = [], 0
        for index in range(int(n)):
            request = ChatRequest.parse(body, index=index)
            text = _format_reply(request, responder(request))
            completion_tokens += _tokens(text)
            message = {"role": "assistant", "content": text, "refusal": None}
            choices.append({"index": index, "message": message, "logprobs": None, "finish_reason": "stop"})
        prompt = "\n".join(_text(m.get("content")) for m in body.get("messages") or [] if isinstance(m, dict))
        prompt_tokens = _tokens(prompt)
        with self._lock:
            self._ids += 1
            serial = self._ids
        return {
            "id": f"chatcmpl-{key[:8]}{serial:06d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or "test-model",
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
            "system_fingerprint": None,
        }

    def _hang(self, handler: _Handler) -> None:
        conn = handler.connection
        handler.close_connection = True
        while not self._stopping.is_set():
            try:
                readable, _, _ = select.select([conn], [], [], 0.05)
                if readable and not conn.recv(1, socket.MSG_PEEK):
                    return  # the client closed its end
            except (OSError, ValueError):
                return
            if readable:
                time.sleep(0.05)  # bytes we will never read: do not spin on them

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)
