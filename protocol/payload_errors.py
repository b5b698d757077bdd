"""Why a payload does not parse, in the protocol's terms: the field and what was wrong with
it. A Nack's BAD_PAYLOAD detail is read by a person writing a client from the spec, not
from this code, so it never carries the parser's own words (construct's or Python's).

The fast parsers (construct's compiled one, `protocol.flat`) do not know which field they
were in; on a failure the payload is parsed again by construct's interpreting parser,
which does. Only refused payloads pay for that.
"""

from __future__ import annotations

import re

import construct as c

SHORT = re.compile(r"expected (\d+), found (\d+)")


def payload_problem(definition: c.Struct, payload: bytes) -> str:
    """What is wrong with `payload`, which the compiled parser of `definition` refused."""
    try:
        definition.parse(payload)
    except c.StringError:  # raised without a path
        return f"{_text_field(definition, payload)} is not valid UTF-8"
    except c.ConstructError as exc:
        where = field_path(exc.path)
        return f"`{where}`: {_problem(exc)}" if where else _problem(exc)
    return "the payload does not parse as its type"


def _text_field(definition: c.Struct, payload: bytes) -> str:
    """The field whose text is not UTF-8, found by parsing ever longer heads of the layout
    (construct's StringError carries no path); inside a list or a choice, the field that
    holds it."""
    for k, sub in enumerate(definition.subcons, start=1):
        try:
            c.Struct(*definition.subcons[:k]).parse(payload)
        except c.StringError:
            if not sub.name:
                return "a text"
            direct = isinstance(getattr(sub, "subcon", None), c.StringEncoded)
            return f"`{sub.name}`" if direct else f"a text in `{sub.name}`"
        except c.ConstructError:
            break
    return "a text"


def field_path(path: str | None) -> str:
    """construct's "(parsing) -> values -> items -> value" as `values[].value`."""
    if not path:
        return ""
    parts = [p.strip() for p in path.split("->")[1:]]
    return ".".join(parts).replace(".items", "[]")


def _problem(exc: c.ConstructError) -> str:
    text = str(exc).splitlines()[-1]
    if isinstance(exc, c.ExplicitError):  # a Switch with no case for its key
        return "its `kind` selects no layout (see Value kinds)"
    if isinstance(exc, c.StreamError):
        short = SHORT.search(text)
        if short:
            return (f"the payload ends inside it ({short[1]} bytes needed, {short[2]} left)")
    return text
