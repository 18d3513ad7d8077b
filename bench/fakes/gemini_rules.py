"""The request rules of Gemini's ``generateContent``, as strictly as the real API applies them.

`check_request(body, model=...)` raises `VendorRefusal` (HTTP status plus Gemini's own error
body) for what the real API refuses, with the real API's messages where they are known:

- Structure, like Google's proto-JSON front end: only known field names, camelCase (the
  real API also takes snake_case proto names; the fake does not, so a translator that
  emits them is caught), the right JSON type per field (``args`` and ``response`` must be
  objects, bytes must be base64, enums UPPER_CASE), at most one data field per part.
  ``null`` counts as absent, as in proto3 JSON. These fail as ``Invalid JSON payload
  received. Unknown name "x" at 'generation_config': Cannot find field.`` or ``Invalid
  value at 'generation_config.temperature' (TYPE_FLOAT), "hot"``.
- Contents: non-empty; roles ``user``/``model`` only; no two consecutive contents with
  the same role; parts non-empty, each with exactly one data field; ``inlineData`` with a
  supported MIME type and bytes that look like it (an image that is not an image, e.g.
  base64 encoded twice, is refused like the real API refuses it).
- Function turns: ``functionCall`` parts only in model contents, ``functionResponse``
  parts only in user contents, names non-empty; a function response turn comes right
  after the function call turn, holds one response per call, and its names are the
  calls' names.
- Thought signatures (model name containing ``gemini-3``): in the current turn (after
  the last user content that is not only function responses) the first functionCall of
  every model step must carry ``thoughtSignature`` (the real rule: parallel calls get a
  signature on the first call only); every signature must be one this fake issued
  (`mint_thought_signature`) or a documented bypass value, so a mangled one is caught.
- ``systemInstruction``: text parts only.
- Tools: function names ``[A-Za-z_][A-Za-z0-9_.:-]{0,127}``, unique; ``parameters`` and
  ``parametersJsonSchema`` not both; ``parameters`` in Gemini's OpenAPI subset only
  (``additionalProperties``, ``$schema``, ``$ref``, ``const``, ``oneOf``... are unknown
  names), of type OBJECT at the root, ``properties``/``required`` only on OBJECT,
  ``items`` only on (and required by) ARRAY, ``enum`` only on STRING, ``required`` naming
  declared properties.
- ``toolConfig.functionCallingConfig``: mode enum; ``allowedFunctionNames`` only with
  ANY/VALIDATED and naming declared functions.
- ``generationConfig``: ranges (temperature 0..2, topP 0..1, topK >= 1, maxOutputTokens
  >= 1, candidateCount 1..8, at most 5 stopSequences, penalties in [-2, 2), logprobs
  0..20 with responseLogprobs), responseMimeType enum, responseSchema (subset-checked)
  and responseJsonSchema not both and only with a JSON MIME type, thinkingConfig with
  budget or level (not both; level only on Gemini 3; budget 0 refused by 2.5 Pro).

Errors found in the body are reported one at a time (the first found); the real API
lists every unknown-name violation at once.

Pure module: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "VendorRefusal",
    "check_request",
    "error_body",
    "mint_thought_signature",
    "thought_signature_ok",
]

_BAD_REQUEST: Final = "type.googleapis.com/google.rpc.BadRequest"
_PROTO: Final = "type.googleapis.com/google.ai.generativelanguage.v1beta."
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,127}")
_ROLES: Final = ("user", "model")
_DATA_FIELDS: Final = (
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "executableCode",
    "codeExecutionResult",
)
_RESPONSE_MIME_TYPES: Final = frozenset(
    {"text/plain", "application/json", "application/xml", "application/yaml", "text/x.enum"}
)
_IMAGE_TYPES: Final = frozenset(
    {"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"}
)
_APPLICATION_TYPES: Final = frozenset(
    {
        "application/pdf",
        "application/json",
        "application/xml",
        "application/rtf",
        "application/x-javascript",
        "application/x-typescript",
        "application/x-python-code",
    }
)
# Leading bytes a part's data must start with, per MIME type; offset 8 is RIFF's form type.
_MAGIC: Final[dict[str, tuple[tuple[int, bytes], ...]]] = {
    "image/png": ((0, b"\x89PNG\r\n\x1a\n"),),
    "image/jpeg": ((0, b"\xff\xd8\xff"),),
    "image/webp": ((0, b"RIFF"), (8, b"WEBP")),
    "application/pdf": ((0, b"%PDF-"),),
    "audio/wav": ((0, b"RIFF"), (8, b"WAVE")),
}
_SIGNATURE_KEY: Final = b"bench.fakes.gemini thought signatures"
_SIGNATURE_PREFIX: Final = b"\x0a\x21"
_SIGNATURE_BYPASS: Final = frozenset(
    {"skip_thought_signature_validator", "context_engineering_is_the_way_to_go"}
)
_SIGNATURES_DOC: Final = "https://ai.google.dev/gemini-api/docs/thought-signatures"
_INT32_LIMIT: Final = 2**31


class VendorRefusal(Exception):
    """A refusal in Gemini's own shape: `status` is the HTTP status, `body` the JSON body.

    `headers` are extra response headers (Gemini sends none for its errors; kept for
    the fake's injected failures).
    """

    status: int
    body: dict[str, Any]
    headers: tuple[tuple[str, str], ...]

    def __init__(
        self,
        status: int,
        message: str,
        status_name: str = "INVALID_ARGUMENT",
        *,
        details: Sequence[Mapping[str, Any]] = (),
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = error_body(status, message, status_name, details)
        self.headers = tuple(headers)


def error_body(
    code: int, message: str, status_name: str, details: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """Google's error object: code, message, status, and details when there are any."""
    error: dict[str, Any] = {"code": code, "message": message, "status": status_name}
    if details:
        error["details"] = [dict(d) for d in details]
    return {"error": error}


def check_request(body: Any, *, model: str = "") -> None:
    """Raise `VendorRefusal` if the real API would refuse this ``generateContent`` body.

    `model` is the model name from the URL; the model-dependent rules (thought
    signatures, thinking level, thinking budget) apply only when it is given.
    """
    if not isinstance(body, dict):
        raise _payload_error("Invalid JSON payload received. Expected an object.", "")
    _walk_message(body, "GenerateContentRequest", "")
    contents: list[dict[str, Any]] = body.get("contents") or []
    if not contents:
        raise _semantic("contents", "contents is not specified")
    _check_contents(contents)
    _check_function_turns(contents)
    if "gemini-3" in model:
        _check_thought_signatures(contents)
    _check_system_instruction(body.get("systemInstruction"))
    declared = _check_tools(body.get("tools") or [])
    _check_tool_config(body.get("toolConfig"), declared)
    _check_generation_config(body.get("generationConfig") or {}, model)


# -- thought signatures ---------------------------------------------------------------


def mint_thought_signature(seed: str) -> str:
    """An opaque, verifiable signature, standard base64 with padding, like the real ones."""
    payload = hashlib.sha256(seed.encode()).digest() + b"\x01"
    tag = hmac.new(_SIGNATURE_KEY, payload, hashlib.sha256).digest()[:8]
    return base64.b64encode(_SIGNATURE_PREFIX + payload + tag).decode()


def thought_signature_ok(signature: str) -> bool:
    """Whether `signature` is one `mint_thought_signature` made (unchanged) or a bypass."""
    if signature in _SIGNATURE_BYPASS:
        return True
    raw = _b64decode(signature)
    if raw is None or len(raw) != 43 or not raw.startswith(_SIGNATURE_PREFIX):
        return False
    payload, tag = raw[2:35], raw[35:]
    expected = hmac.new(_SIGNATURE_KEY, payload, hashlib.sha256).digest()[:8]
    return hmac.compare_digest(tag, expected)


# -- structure: the proto-JSON layer ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Scalar:
    proto: str  # TYPE_STRING, TYPE_BOOL, TYPE_INT32, TYPE_INT64, TYPE_FLOAT, TYPE_BYTES


@dataclass(frozen=True, slots=True)
class _Enum:
    proto: str
    values: frozenset[str]
    fold_case: bool = False  # Schema.type is also accepted in lower case


@dataclass(frozen=True, slots=True)
class _Message:
    name: str


@dataclass(frozen=True, slots=True)
class _Repeated:
    item: _Spec


@dataclass(frozen=True, slots=True)
class _Map:
    value: _Spec


@dataclass(frozen=True, slots=True)
class _Json:
    proto: str
    object_only: bool  # google.protobuf.Struct; Value takes anything


_Spec = _Scalar | _Enum | _Message | _Repeated | _Map | _Json

_STRING: Final = _Scalar("TYPE_STRING")
_BOOL: Final = _Scalar("TYPE_BOOL")
_INT32: Final = _Scalar("TYPE_INT32")
_INT64: Final = _Scalar("TYPE_INT64")
_FLOAT: Final = _Scalar("TYPE_FLOAT")
_DOUBLE: Final = _Scalar("TYPE_DOUBLE")
_BYTES: Final = _Scalar("TYPE_BYTES")
_STRUCT: Final = _Json("type.googleapis.com/google.protobuf.Struct", object_only=True)
_VALUE: Final = _Json("type.googleapis.com/google.protobuf.Value", object_only=False)


def _enum(name: str, *values: str, fold_case: bool = False) -> _Enum:
    return _Enum(_PROTO + name, frozenset(values), fold_case)


_HARM_CATEGORIES: Final = _enum(
    "HarmCategory",
    "HARM_CATEGORY_UNSPECIFIED",
    "HARM_CATEGORY_DEROGATORY",
    "HARM_CATEGORY_TOXICITY",
    "HARM_CATEGORY_VIOLENCE",
    "HARM_CATEGORY_SEXUAL",
    "HARM_CATEGORY_MEDICAL",
    "HARM_CATEGORY_DANGEROUS",
    "HARM_CATEGORY_HARASSMENT",
    "HARM_CATEGORY_HATE_SPEECH",
    "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    "HARM_CATEGORY_DANGEROUS_CONTENT",
    "HARM_CATEGORY_CIVIC_INTEGRITY",
)
_THRESHOLDS: Final = _enum(
    "SafetySetting.HarmBlockThreshold",
    "HARM_BLOCK_THRESHOLD_UNSPECIFIED",
    "BLOCK_LOW_AND_ABOVE",
    "BLOCK_MEDIUM_AND_ABOVE",
    "BLOCK_ONLY_HIGH",
    "BLOCK_NONE",
    "OFF",
)

_MESSAGES: Final[dict[str, dict[str, _Spec]]] = {
    "GenerateContentRequest": {
        "model": _STRING,
        "contents": _Repeated(_Message("Content")),
        "systemInstruction": _Message("Content"),
        "tools": _Repeated(_Message("Tool")),
        "toolConfig": _Message("ToolConfig"),
        "safetySettings": _Repeated(_Message("SafetySetting")),
        "generationConfig": _Message("GenerationConfig"),
        "cachedContent": _STRING,
    },
    "Content": {"role": _STRING, "parts": _Repeated(_Message("Part"))},
    "Part": {
        "text": _STRING,
        "inlineData": _Message("Blob"),
        "fileData": _Message("FileData"),
        "functionCall": _Message("FunctionCall"),
        "functionResponse": _Message("FunctionResponse"),
        "executableCode": _Message("ExecutableCode"),
        "codeExecutionResult": _Message("CodeExecutionResult"),
        "thought": _BOOL,
        "thoughtSignature": _BYTES,
        "videoMetadata": _Message("VideoMetadata"),
        "partMetadata": _STRUCT,
    },
    "Blob": {"mimeType": _STRING, "data": _BYTES},
    "FileData": {"mimeType": _STRING, "fileUri": _STRING},
    "FunctionCall": {"id": _STRING, "name": _STRING, "args": _STRUCT},
    "FunctionResponse": {
        "id": _STRING,
        "name": _STRING,
        "response": _STRUCT,
        "parts": _Repeated(_Message("FunctionResponsePart")),
        "willContinue": _BOOL,
        "scheduling": _enum(
            "FunctionResponse.Scheduling",
            "SCHEDULING_UNSPECIFIED",
            "SILENT",
            "WHEN_IDLE",
            "INTERRUPT",
        ),
    },
    "FunctionResponsePart": {"inlineData": _Message("Blob")},
    "ExecutableCode": {
        "language": _enum("ExecutableCode.Language", "LANGUAGE_UNSPECIFIED", "PYTHON"),
        "code": _STRING,
    },
    "CodeExecutionResult": {
        "outcome": _enum(
            "CodeExecutionResult.Outcome",
            "OUTCOME_UNSPECIFIED",
            "OUTCOME_OK",
            "OUTCOME_FAILED",
            "OUTCOME_DEADLINE_EXCEEDED",
        ),
        "output": _STRING,
    },
    "VideoMetadata": {"startOffset": _STRING, "endOffset": _STRING, "fps": _DOUBLE},
    "Tool": {
        "functionDeclarations": _Repeated(_Message("FunctionDeclaration")),
        "googleSearchRetrieval": _STRUCT,
        "codeExecution": _STRUCT,
        "googleSearch": _STRUCT,
        "urlContext": _STRUCT,
        "computerUse": _STRUCT,
        "fileSearch": _STRUCT,
        "googleMaps": _STRUCT,
    },
    "FunctionDeclaration": {
        "name": _STRING,
        "description": _STRING,
        "behavior": _enum(
            "FunctionDeclaration.Behavior", "UNSPECIFIED", "BLOCKING", "NON_BLOCKING"
        ),
        "parameters": _Message("Schema"),
        "parametersJsonSchema": _VALUE,
        "response": _Message("Schema"),
        "responseJsonSchema": _VALUE,
    },
    "Schema": {
        "type": _enum(
            "Type",
            "TYPE_UNSPECIFIED",
            "STRING",
            "NUMBER",
            "INTEGER",
            "BOOLEAN",
            "ARRAY",
            "OBJECT",
            "NULL",
            fold_case=True,
        ),
        "format": _STRING,
        "title": _STRING,
        "description": _STRING,
        "nullable": _BOOL,
        "enum": _Repeated(_STRING),
        "maxItems": _INT64,
        "minItems": _INT64,
        "properties": _Map(_Message("Schema")),
        "required": _Repeated(_STRING),
        "minProperties": _INT64,
        "maxProperties": _INT64,
        "minLength": _INT64,
        "maxLength": _INT64,
        "pattern": _STRING,
        "example": _VALUE,
        "anyOf": _Repeated(_Message("Schema")),
        "propertyOrdering": _Repeated(_STRING),
        "default": _VALUE,
        "items": _Message("Schema"),
        "minimum": _DOUBLE,
        "maximum": _DOUBLE,
    },
    "ToolConfig": {
        "functionCallingConfig": _Message("FunctionCallingConfig"),
        "retrievalConfig": _STRUCT,
    },
    "FunctionCallingConfig": {
        "mode": _enum(
            "FunctionCallingConfig.Mode", "MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED"
        ),
        "allowedFunctionNames": _Repeated(_STRING),
    },
    "SafetySetting": {"category": _HARM_CATEGORIES, "threshold": _THRESHOLDS},
    "GenerationConfig": {
        "stopSequences": _Repeated(_STRING),
        "responseMimeType": _STRING,
        "responseSchema": _Message("Schema"),
        "responseJsonSchema": _VALUE,
        "responseModalities": _Repeated(
            _enum("GenerationConfig.Modality", "MODALITY_UNSPECIFIED", "TEXT", "IMAGE", "AUDIO")
        ),
        "candidateCount": _INT32,
        "maxOutputTokens": _INT32,
        "temperature": _FLOAT,
        "topP": _FLOAT,
        "topK": _INT32,
        "seed": _INT32,
        "presencePenalty": _FLOAT,
        "frequencyPenalty": _FLOAT,
        "responseLogprobs": _BOOL,
        "logprobs": _INT32,
        "enableEnhancedCivicAnswers": _BOOL,
        "speechConfig": _STRUCT,
        "imageConfig": _STRUCT,
        "thinkingConfig": _Message("ThinkingConfig"),
        "mediaResolution": _enum(
            "GenerationConfig.MediaResolution",
            "MEDIA_RESOLUTION_UNSPECIFIED",
            "MEDIA_RESOLUTION_LOW",
            "MEDIA_RESOLUTION_MEDIUM",
            "MEDIA_RESOLUTION_HIGH",
        ),
    },
    "ThinkingConfig": {
        "includeThoughts": _BOOL,
        "thinkingBudget": _INT32,
        "thinkingLevel": _enum(
            "ThinkingConfig.ThinkingLevel",
            "THINKING_LEVEL_UNSPECIFIED",
            "MINIMAL",
            "LOW",
            "MEDIUM",
            "HIGH",
        ),
    },
}
_ONEOF_MESSAGES: Final = frozenset({"Part"})


def _snake(key: str) -> str:
    return re.sub(r"([A-Z])", r"_\1", key).lower()


def _join(path: str, key: str) -> str:
    return f"{path}.{_snake(key)}" if path else _snake(key)


def _shown(value: Any) -> str:
    """A value as the real error messages quote it (JSON, shortened)."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def _payload_error(message: str, field: str | None) -> VendorRefusal:
    """A proto-JSON parse failure, reported with a BadRequest field violation."""
    violation = {"description": message} if not field else {"field": field, "description": message}
    return VendorRefusal(
        400, message, details=[{"@type": _BAD_REQUEST, "fieldViolations": [violation]}]
    )


def _invalid_value(path: str, proto: str, value: Any) -> VendorRefusal:
    return _payload_error(f"Invalid value at '{path}' ({proto}), {_shown(value)}", path)


def _walk_message(value: Any, name: str, path: str) -> None:
    """Check one message object: known field names, and each field's JSON type."""
    if not isinstance(value, dict):
        raise _invalid_value(path, _PROTO + name, value)
    fields = _MESSAGES[name]
    where = f" at '{path}'" if path else ""
    for key, item in value.items():
        spec = fields.get(key)
        if spec is None:
            raise _payload_error(
                f'Invalid JSON payload received. Unknown name "{key}"{where}: Cannot find field.',
                path,
            )
        if item is None:  # proto3 JSON: null is the field's default
            continue
        if isinstance(item, list) and not isinstance(spec, _Repeated | _Json):
            raise _payload_error(
                f'Invalid JSON payload received. Unknown name "{key}"{where}: '
                "Proto field is not repeating, cannot start list.",
                path,
            )
        _walk(item, spec, _join(path, key))
    if name in _ONEOF_MESSAGES:
        data = [k for k in _DATA_FIELDS if value.get(k) is not None]
        if len(data) > 1:
            raise _payload_error(
                f"Invalid value at '{path}' (oneof), oneof field 'data' is already set. "
                f"Cannot set '{data[1]}'",
                path,
            )


def _walk(value: Any, spec: _Spec, path: str) -> None:
    if isinstance(spec, _Message):
        _walk_message(value, spec.name, path)
    elif isinstance(spec, _Repeated):
        if not isinstance(value, list):
            raise _invalid_value(path, _spec_name(spec.item), value)
        for index, item in enumerate(value):
            if item is None:
                raise _invalid_value(f"{path}[{index}]", _spec_name(spec.item), item)
            _walk(item, spec.item, f"{path}[{index}]")
    elif isinstance(spec, _Map):
        if not isinstance(value, dict):
            raise _invalid_value(path, _spec_name(spec.value), value)
        for index, item in enumerate(value.values()):
            _walk(item, spec.value, f"{path}[{index}].value")
    elif isinstance(spec, _Json):
        if spec.object_only and not isinstance(value, dict):
            raise _invalid_value(path, spec.proto, value)
    elif isinstance(spec, _Enum):
        folded = value.upper() if spec.fold_case and isinstance(value, str) else value
        if not isinstance(folded, str) or folded not in spec.values:
            raise _invalid_value(path, spec.proto, value)
    elif not _scalar_ok(value, spec.proto):
        if spec.proto == "TYPE_BYTES" and isinstance(value, str):
            raise _payload_error(
                f"Invalid value at '{path}' (TYPE_BYTES), Base64 decoding failed for "
                f"{_shown(value)}",
                path,
            )
        raise _invalid_value(path, spec.proto, value)


def _spec_name(spec: _Spec) -> str:
    if isinstance(spec, _Message):
        return _PROTO + spec.name
    if isinstance(spec, _Scalar | _Enum | _Json):
        return spec.proto
    return "repeated"


def _scalar_ok(value: Any, proto: str) -> bool:
    """Proto-JSON acceptance of one scalar (numbers may also be numeric strings)."""
    if proto == "TYPE_STRING":
        return isinstance(value, str)
    if proto == "TYPE_BOOL":
        return isinstance(value, bool)
    if proto == "TYPE_BYTES":
        return isinstance(value, str) and _b64decode(value) is not None
    number = _number(value)
    if number is None:
        return False
    if proto in ("TYPE_FLOAT", "TYPE_DOUBLE"):
        return True
    if not math.isfinite(number) or number != int(number):
        return False
    return proto == "TYPE_INT64" or -_INT32_LIMIT <= int(number) < _INT32_LIMIT


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _b64decode(text: str) -> bytes | None:
    """Decode standard or URL-safe base64, padded or not (as proto JSON does)."""
    if not re.fullmatch(r"[A-Za-z0-9+/_-]*={0,2}", text):
        return None
    unpadded = text.rstrip("=")
    if len(unpadded) % 4 == 1:
        return None
    padded = unpadded + "=" * (-len(unpadded) % 4)
    try:
        return base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        return None


# -- semantics ---------------------------------------------------------------------------


def _semantic(path: str, message: str) -> VendorRefusal:
    """A validation failure in the real API's "* Request.field: problem" form."""
    return VendorRefusal(400, f"* GenerateContentRequest.{path}: {message}\n")


def _parts(content: Mapping[str, Any]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = content.get("parts") or []
    return parts


def _role(content: Mapping[str, Any]) -> str:
    role: str = content.get("role") or "user"
    return role


def _check_contents(contents: list[dict[str, Any]]) -> None:
    previous = None
    for index, content in enumerate(contents):
        role = _role(content)
        if role not in _ROLES:
            raise VendorRefusal(
                400, f"Role '{role}' is not supported. Please use a valid role: user, model."
            )
        parts = _parts(content)
        if not parts:
            raise _semantic(f"contents[{index}].parts", "contents.parts must not be empty.")
        for position, part in enumerate(parts):
            _check_part(part, f"contents[{index}].parts[{position}]", role)
        if role == previous:
            raise VendorRefusal(
                400, "Please ensure that multiturn requests alternate between user and model."
            )
        previous = role


def _check_part(part: Mapping[str, Any], path: str, role: str) -> None:
    data = [k for k in _DATA_FIELDS if part.get(k) is not None]
    if not data:
        raise _semantic(
            f"{path}.data", "required oneof field 'data' must have one initialized field"
        )
    kind = data[0]
    if kind == "inlineData":
        _check_blob(part["inlineData"], f"{path}.inline_data")
    elif kind == "fileData" and not part["fileData"].get("fileUri"):
        raise _semantic(f"{path}.file_data.file_uri", "File URI cannot be empty.")
    elif kind == "functionCall":
        if role != "model":
            raise _semantic(
                f"{path}.function_call", "function calls are only allowed in model contents."
            )
        if not part["functionCall"].get("name"):
            raise _semantic(f"{path}.function_call.name", "Name cannot be empty.")
    elif kind == "functionResponse":
        if role != "user":
            raise _semantic(
                f"{path}.function_response", "function responses are only allowed in user contents."
            )
        if not part["functionResponse"].get("name"):
            raise _semantic(f"{path}.function_response.name", "Name cannot be empty.")


def _check_blob(blob: Mapping[str, Any], path: str) -> None:
    mime = str(blob.get("mimeType") or "").lower()
    if not mime:
        raise _semantic(f"{path}.mime_type", "Mime type cannot be empty.")
    family = mime.partition("/")[0]
    if not (
        mime in _IMAGE_TYPES or mime in _APPLICATION_TYPES or family in ("audio", "video", "text")
    ):
        raise VendorRefusal(400, f"Unsupported MIME type: {mime}")
    data = _b64decode(str(blob.get("data") or "")) or b""
    if not data:
        raise _semantic(f"{path}.data", "Inline data cannot be empty.")
    magic = _MAGIC.get(mime)
    if magic and not all(data[at : at + len(sig)] == sig for at, sig in magic):
        kind = {"image": "image", "audio": "audio"}.get(family, "document")
        raise VendorRefusal(
            400,
            f"Unable to process input {kind}. Please retry or report in "
            "https://developers.generativeai.google/guide/troubleshooting",
        )


def _calls(content: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [p["functionCall"] for p in _parts(content) if p.get("functionCall") is not None]


def _responses(content: Mapping[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    return [
        (position, p["functionResponse"])
        for position, p in enumerate(_parts(content))
        if p.get("functionResponse") is not None
    ]


def _check_function_turns(contents: list[dict[str, Any]]) -> None:
    """Function call turns follow a user turn; each is answered in full by the next."""
    for index, content in enumerate(contents):
        calls = _calls(content)
        if calls and index == 0:
            raise VendorRefusal(
                400,
                "Please ensure that function call turn comes immediately after a user turn "
                "or after a function response turn.",
            )
        responses = _responses(content)
        following = contents[index + 1] if index + 1 < len(contents) else None
        if calls and following is not None and len(_responses(following)) != len(calls):
            raise _count_mismatch()
        if not responses:
            continue
        previous_calls = _calls(contents[index - 1]) if index > 0 else []
        if not previous_calls:
            raise VendorRefusal(
                400,
                "Please ensure that function response turn comes immediately after a "
                "function call turn.",
            )
        if len(responses) != len(previous_calls):
            raise _count_mismatch()
        unanswered = Counter(str(c.get("name")) for c in previous_calls)
        for position, response in responses:
            name = str(response.get("name"))
            if unanswered[name] <= 0:
                raise _semantic(
                    f"contents[{index}].parts[{position}].function_response.name",
                    f"function response name '{name}' does not match a function call of the "
                    "previous function call turn.",
                )
            unanswered[name] -= 1


def _count_mismatch() -> VendorRefusal:
    return VendorRefusal(
        400,
        "Please ensure that the number of function response parts is equal to the number "
        "of function call parts of the function call turn.",
    )


def _check_thought_signatures(contents: list[dict[str, Any]]) -> None:
    """Gemini 3: signatures intact everywhere, and present where the current turn needs them."""
    for content in contents:
        for part in _parts(content):
            signature = part.get("thoughtSignature")
            if signature is not None and not thought_signature_ok(str(signature)):
                raise VendorRefusal(400, "Corrupted thought signature.")
    turn_start = 0
    for index, content in enumerate(contents):
        if _role(content) == "user" and any(
            p.get("functionResponse") is None for p in _parts(content)
        ):
            turn_start = index + 1
    for index in range(turn_start, len(contents)):
        first_call = next(
            (p for p in _parts(contents[index]) if p.get("functionCall") is not None), None
        )
        if first_call is not None and not first_call.get("thoughtSignature"):
            name = first_call["functionCall"].get("name")
            raise VendorRefusal(
                400,
                "Function call is missing a thought_signature in functionCall parts. This is "
                "required for tools to work correctly, and missing thought_signature may lead "
                "to degraded model performance. Additional data, function call "
                f"`default_api:{name}` , position {index + 1}. Please refer to "
                f"{_SIGNATURES_DOC} for more details.",
            )


def _check_system_instruction(instruction: Mapping[str, Any] | None) -> None:
    if instruction is None:
        return
    parts = _parts(instruction)
    if not parts:
        raise _semantic("system_instruction.parts", "contents.parts must not be empty.")
    for position, part in enumerate(parts):
        path = f"system_instruction.parts[{position}]"
        data = [k for k in _DATA_FIELDS if part.get(k) is not None]
        if not data:
            raise _semantic(
                f"{path}.data", "required oneof field 'data' must have one initialized field"
            )
        if data != ["text"]:
            raise _semantic(path, "system instruction parts must be text.")


def _check_tools(tools: list[dict[str, Any]]) -> set[str]:
    """Check the tools; return the declared function names."""
    declared: set[str] = set()
    for t_index, tool in enumerate(tools):
        if not any(v is not None for v in tool.values()):
            raise _semantic(
                f"tools[{t_index}].tool_type",
                "required one_of 'tool_type' must have one initialized field",
            )
        for d_index, declaration in enumerate(tool.get("functionDeclarations") or []):
            path = f"tools[{t_index}].function_declarations[{d_index}]"
            name = declaration.get("name") or ""
            if not _NAME.fullmatch(name):
                raise _semantic(
                    f"{path}.name",
                    "Invalid function name. Must start with a letter or an underscore. Must be "
                    "a-z, A-Z, 0-9, or contain underscores, dots, colons and dashes, with a "
                    "maximum length of 128.",
                )
            if name in declared:
                raise _semantic(f"{path}.name", f"Duplicate function declaration found: {name}")
            declared.add(name)
            _check_declaration(declaration, path)
    return declared


def _check_declaration(declaration: Mapping[str, Any], path: str) -> None:
    for schema_key, json_key in (
        ("parameters", "parametersJsonSchema"),
        ("response", "responseJsonSchema"),
    ):
        schema, json_schema = declaration.get(schema_key), declaration.get(json_key)
        if schema is not None and json_schema is not None:
            raise _semantic(
                path, f"{_snake(schema_key)} and {_snake(json_key)} cannot both be set."
            )
        if json_schema is not None and not isinstance(json_schema, dict | bool):
            raise _semantic(f"{path}.{_snake(json_key)}", "must be a JSON Schema object.")
        if schema is not None:
            _check_schema(schema, f"{path}.{schema_key}", root_object=schema_key == "parameters")


def _check_schema(schema: Mapping[str, Any], path: str, *, root_object: bool = False) -> None:
    """Rules of Gemini's OpenAPI Schema beyond its field names."""
    kind = str(schema.get("type") or "TYPE_UNSPECIFIED").upper()
    if root_object and kind != "OBJECT":
        raise _semantic(f"{path}.type", "parameters schema should be of type OBJECT.")
    properties = schema.get("properties")
    if kind != "OBJECT":
        for key in ("properties", "required"):
            if schema.get(key) is not None:
                raise _semantic(f"{path}.{key}", "only allowed for OBJECT type")
    if kind != "ARRAY" and schema.get("items") is not None:
        raise _semantic(f"{path}.items", "only allowed for ARRAY type")
    if kind == "ARRAY" and schema.get("items") is None:
        raise _semantic(f"{path}.items", "missing field.")
    if kind != "STRING" and schema.get("enum") is not None:
        raise _semantic(f"{path}.enum", "only allowed for STRING type")
    for index, name in enumerate(schema.get("required") or []):
        if name not in (properties or {}):
            raise _semantic(f"{path}.required[{index}]", "property is not defined")
    for name, sub in (properties or {}).items():
        _check_schema(sub, f"{path}.properties[{name}]")
    if schema.get("items") is not None:
        _check_schema(schema["items"], f"{path}.items")
    for index, sub in enumerate(schema.get("anyOf") or []):
        _check_schema(sub, f"{path}.any_of[{index}]")


def _check_tool_config(config: Mapping[str, Any] | None, declared: set[str]) -> None:
    calling = (config or {}).get("functionCallingConfig") or {}
    mode = calling.get("mode") or "MODE_UNSPECIFIED"
    allowed = calling.get("allowedFunctionNames") or []
    path = "tool_config.function_calling_config.allowed_function_names"
    if allowed and mode not in ("ANY", "VALIDATED"):
        raise _semantic(path, "only allowed when function calling mode is ANY or VALIDATED.")
    for index, name in enumerate(allowed):
        if name not in declared:
            raise _semantic(f"{path}[{index}]", f"function '{name}' is not declared in tools.")


def _check_generation_config(config: Mapping[str, Any], model: str) -> None:
    _check_ranges(config)
    _check_response_format(config)
    _check_thinking(config.get("thinkingConfig") or {}, model)


# (field, low, high, high inclusive, message) for the numeric generationConfig fields.
_RANGES: Final = (
    ("temperature", 0.0, 2.0, True, "temperature must be in the range [0.0, 2.0]."),
    ("topP", 0.0, 1.0, True, "top_p must be in the range [0.0, 1.0]."),
    ("topK", 1.0, math.inf, True, "top_k must be positive."),
    ("maxOutputTokens", 1.0, math.inf, True, "max_output_tokens must be positive."),
    ("candidateCount", 1.0, 8.0, True, "candidate_count must be in the range [1, 8]."),
    ("presencePenalty", -2.0, 2.0, False, "presence_penalty must be in the range [-2.0, 2.0)."),
    ("frequencyPenalty", -2.0, 2.0, False, "frequency_penalty must be in the range [-2.0, 2.0)."),
    ("logprobs", 0.0, 20.0, True, "logprobs must be in the range [0, 20]."),
)


def _check_ranges(config: Mapping[str, Any]) -> None:
    for key, low, high, inclusive, message in _RANGES:
        value = _number(config.get(key))
        if value is None:
            continue
        if not (low <= value <= high if inclusive else low <= value < high):
            raise _semantic(f"generation_config.{_snake(key)}", message)
    if len(config.get("stopSequences") or []) > 5:
        raise _semantic("generation_config.stop_sequences", "at most 5 stop sequences are allowed.")
    if config.get("logprobs") is not None and config.get("responseLogprobs") is not True:
        raise _semantic(
            "generation_config.logprobs", "logprobs can only be set when response_logprobs is true."
        )


def _check_response_format(config: Mapping[str, Any]) -> None:
    mime = config.get("responseMimeType")
    if mime is not None and mime not in _RESPONSE_MIME_TYPES:
        raise _semantic(
            "generation_config.response_mime_type",
            "allowed mimetypes are `text/plain`, `application/json`, `application/xml`, "
            "`application/yaml` and `text/x.enum`.",
        )
    schema, json_schema = config.get("responseSchema"), config.get("responseJsonSchema")
    if schema is not None and json_schema is not None:
        raise _semantic(
            "generation_config", "response_schema and response_json_schema cannot both be set."
        )
    if schema is not None:
        if mime not in ("application/json", "text/x.enum"):
            raise _semantic(
                "generation_config.response_mime_type",
                "response_mime_type must be `application/json` or `text/x.enum` when "
                "response_schema is set.",
            )
        _check_schema(schema, "generation_config.response_schema")
    if json_schema is not None:
        if mime != "application/json":
            raise _semantic(
                "generation_config.response_mime_type",
                "response_mime_type must be `application/json` when response_json_schema is set.",
            )
        if not isinstance(json_schema, dict | bool):
            raise _semantic(
                "generation_config.response_json_schema", "must be a JSON Schema object."
            )


def _check_thinking(thinking: Mapping[str, Any], model: str) -> None:
    budget, level = _number(thinking.get("thinkingBudget")), thinking.get("thinkingLevel")
    path = "generation_config.thinking_config"
    if budget is not None and level is not None:
        raise _semantic(path, "You can only set only one of thinking budget and thinking level.")
    if budget is not None and budget < -1:
        raise _semantic(
            f"{path}.thinking_budget", "thinking_budget must be -1 (dynamic), 0 (off) or positive."
        )
    if budget == 0 and "2.5-pro" in model:
        raise VendorRefusal(400, "Budget 0 is invalid. This model only works in thinking mode.")
    if level is not None and model and "gemini-3" not in model:
        raise VendorRefusal(400, "Thinking level is not supported for this model.")
