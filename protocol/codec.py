"""Text <-> frame. Pure: no I/O, no event loop.

``decode`` returns a frame or raises ``BadFrame`` / ``UnknownType`` (both
``ProtocolError``), never anything else: malformed JSON, a non-object, a missing or
unknown ``type`` and fields that fail validation each get a message that says what
was wrong. ``encode`` writes compact JSON with only the fields that were set
(``encode_bytes``: the same, UTF-8 encoded, for ``send(..., text=True)``).
``construct`` builds a frame from trusted fields without validation, like pydantic's
``model_construct`` but without its per-field default resolution.

``encode_bytes`` and ``construct`` are on the rpc hot path (every ``tool_call`` the
daemon sends and every ``tool_result`` the reference client answers goes through
both); protocol/README.md "Hot path" lists the other tuned places.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar, cast, get_args

from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticUndefined

from .errors import BadFrame, UnknownType
from .frames import Frame, _Frame

__all__ = ["FRAME_TYPES", "construct", "decode", "encode", "encode_bytes"]

F = TypeVar("F", bound=_Frame)

_ADAPTER: TypeAdapter[Any] = TypeAdapter(Frame)

FRAME_TYPES: frozenset[str] = frozenset(
    model.model_fields["type"].default for model in get_args(get_args(Frame)[0])
)

_MAX_ERRORS_SHOWN = 3


def _reject_constant(name: str) -> Any:
    raise BadFrame(f"malformed JSON: {name} is not a JSON number")


def decode(text: str | bytes) -> _Frame:
    """Parse one WebSocket message into a frame."""
    # pydantic's JSON parser accepts NaN/Infinity, which JSON does not (and which
    # would encode back as null): check with the strict parser only when they may occur.
    probe = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    if "NaN" in probe or "Infinity" in probe:
        try:
            json.loads(text, parse_constant=_reject_constant)  # raises BadFrame on a constant
        except (ValueError, TypeError, RecursionError) as exc:
            raise BadFrame(f"malformed JSON: {exc}") from None
    try:
        frame: _Frame = _ADAPTER.validate_json(text)
        return frame
    except ValidationError as exc:
        raise _translate(exc) from None
    except (ValueError, TypeError, RecursionError) as exc:
        # pydantic-core reports bad input as ValidationError (undecodable bytes too:
        # json_invalid) but reserves other errors for its internal failures; those are
        # still the peer's frame we could not read.
        raise BadFrame(f"malformed frame: {exc}") from None


def encode(frame: _Frame) -> str:
    """Serialise a frame to compact JSON (only the fields that were set)."""
    return frame.model_dump_json(exclude_unset=True)


# --- the hot path: frames we build ourselves ------------------------------------------


def encode_bytes(frame: _Frame) -> bytes:
    """``encode(frame)`` as UTF-8 bytes, without a str in between.

    Hot path: pydantic's serializer writes bytes, and websockets sends bytes as a text
    message (``send(data, text=True)``, ``send_text_batched``) without checking or
    re-encoding them: ``encode`` would decode them to a str that websockets encodes
    back to the same bytes."""
    return frame.__pydantic_serializer__.to_json(frame, exclude_unset=True)


_object_setattr = object.__setattr__
_IMMUTABLE = (str, int, float, bool, type(None), type(PydanticUndefined), tuple, frozenset)


class _FrameTemplate:
    """What ``construct`` needs of one frame class, computed once per class."""

    __slots__ = ("defaults", "names", "required")

    def __init__(self, cls: type[_Frame]) -> None:
        # Every field in declaration order (as model_construct orders __dict__); the
        # placeholders of required fields are always overwritten by the caller's.
        defaults: dict[str, Any] = {}
        required: set[str] = set()
        simple = not cls.__private_attributes__ and (cls.model_post_init is _Frame.model_post_init)
        for name, field in cls.model_fields.items():
            if (
                field.default_factory is not None
                or field.alias is not None
                or field.validation_alias is not None
                or not isinstance(field.default, _IMMUTABLE)
            ):
                simple = False  # leave factories, aliases, mutable defaults to pydantic
            if field.is_required():
                required.add(name)
            defaults[name] = None if field.is_required() else field.default
        self.defaults = defaults if simple else None
        self.required = frozenset(required)
        self.names = frozenset(cls.model_fields)


_TEMPLATES: dict[type[_Frame], _FrameTemplate] = {}


def construct(cls: type[F], **fields: Any) -> F:
    """``cls.model_construct(**fields)``, faster: no validation, defaults copied from a
    per-class template. Only for fields the caller built itself (trusted).

    Hot path: ``model_construct`` works out every field's default in Python on each
    call; the template does that once per class. A class the template cannot copy
    safely (default factories, aliases, mutable defaults, private attributes, its own
    ``model_post_init``), or fields that do not match the class, go to
    ``model_construct`` itself; a test checks that both build the same frame."""
    template = _TEMPLATES.get(cls)
    if template is None:
        template = _TEMPLATES[cls] = _FrameTemplate(cls)
    defaults = template.defaults
    keys = fields.keys()
    if defaults is None or not (keys <= template.names and template.required <= keys):
        return cast(F, cls.model_construct(**fields))
    values = dict(defaults)
    values.update(fields)
    fields_set = set(keys)
    fields_set.add("type")  # what _Frame.model_post_init does
    frame: F = cls.__new__(cls)
    _object_setattr(frame, "__dict__", values)
    _object_setattr(frame, "__pydantic_fields_set__", fields_set)
    _object_setattr(frame, "__pydantic_extra__", None)
    _object_setattr(frame, "__pydantic_private__", None)
    return frame


# --- errors -----------------------------------------------------------------------------


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "an array" if isinstance(value, list) else "an object"


def _translate(exc: ValidationError) -> BadFrame | UnknownType:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    kind = first["type"]
    if kind == "json_invalid":
        return BadFrame(f"malformed JSON: {first.get('ctx', {}).get('error', first['msg'])}")
    if kind == "model_attributes_type" or kind == "model_type" or kind == "dict_type":
        return BadFrame("a frame must be a JSON object")
    if kind == "union_tag_not_found":
        return BadFrame("frame has no 'type' field")
    if kind == "union_tag_invalid":
        given = exc.errors(include_url=False)[0].get("input")
        value = given.get("type") if isinstance(given, dict) else None
        if not isinstance(value, str):
            return BadFrame(f"'type' must be a string, got {_json_kind(value)}")
        tag = first.get("ctx", {}).get("tag", "?")
        return UnknownType(f"unknown frame type {tag!r}", frame_type=str(tag))
    if first["loc"] == ():  # e.g. a str holding a lone surrogate (string_unicode)
        return BadFrame(f"invalid frame: {first['msg']}")
    frame_type = first["loc"][0]
    parts = []
    for err in errors[:_MAX_ERRORS_SHOWN]:
        field = ".".join(str(p) for p in err["loc"][1:]) or "(frame)"
        parts.append(f"{field}: {err['msg']}")
    more = (
        f" (and {len(errors) - _MAX_ERRORS_SHOWN} more)" if len(errors) > _MAX_ERRORS_SHOWN else ""
    )
    return BadFrame(f"invalid {frame_type} frame: " + "; ".join(parts) + more)
