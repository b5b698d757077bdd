"""Fields by the protocol revision that added them: a message is defined once, and each
revision's layout is cut from that definition.

Why and how: docs/internals.md, protocol/revisions.py.
"""

from __future__ import annotations

import construct as c

from protocol.framing import REVISION_1_0, REVISIONS

NO_DEFAULT = object()


class Since(c.Subconstruct):
    """A field first sent in `revision`. A marker in a definition, never parsed or built:
    `at_revision` leaves it out of older layouts and unwraps it in the others. `default` is
    what a decoder of an older revision fills in for it inside list elements (a message's
    own fields take their dataclass default instead)."""

    def __init__(self, revision: int, subcon: c.Construct, default: object = NO_DEFAULT):
        super().__init__(subcon)
        self.name = subcon.name  # a Struct knows its fields by name
        self.revision = revision
        self.default = default


def since(revision: int, field: c.Construct, default: object = NO_DEFAULT) -> Since:
    """`"name" / U8` added in `revision` (a REVISIONS key)."""
    if revision not in REVISIONS:
        raise ValueError(f"{field.name}: revision {revision} is not one of {list(REVISIONS)}")
    return Since(revision, field, default)


def revision_of(field: c.Construct) -> int:
    return field.revision if isinstance(field, Since) else REVISION_1_0


def prefixed_parts(con: c.Construct) -> tuple[c.Construct, c.Construct] | None:
    """(count field, item) of a PrefixedArray - construct builds one as a FocusedSeq of a
    Rebuild count and an Array - or None for anything else."""
    if not isinstance(con, c.FocusedSeq) or con.parsebuildfrom != "items":
        return None
    parts = {sc.name: sc.subcon for sc in con.subcons}
    if set(parts) != {"count", "items"}:
        return None
    return parts["count"].subcon, parts["items"].subcon


def at_revision(con: c.Construct, revision: int) -> c.Construct:
    """`con` as a peer of `revision` lays it out: the fields added after it left out, the
    others unwrapped, inside list elements too."""
    if isinstance(con, Since):
        return at_revision(con.subcon, revision)
    if isinstance(con, c.Renamed):
        return c.Renamed(at_revision(con.subcon, revision), newname=con.name)
    if isinstance(con, c.Struct):
        return c.Struct(*(at_revision(sc, revision) for sc in con.subcons
                          if revision_of(sc) <= revision))
    parts = prefixed_parts(con)
    if parts is not None:
        count, item = parts
        return c.PrefixedArray(count, at_revision(item, revision))
    return con


def unwrapped(con: c.Construct) -> c.Construct:
    """The field's construct without its name and revision marker."""
    while isinstance(con, Since | c.Renamed):
        con = con.subcon
    return con


def element(field: c.Construct) -> c.Struct | None:
    """The element struct of a list field, or None."""
    parts = prefixed_parts(unwrapped(field))
    if parts is None or not isinstance(unwrapped(parts[1]), c.Struct):
        return None
    return unwrapped(parts[1])


def check_definition(owner: str, definition: c.Struct, first: int) -> None:
    """Refuses a definition an older peer could not read as a prefix: a field added in a
    revision before `first` (the type's own), or before a field listed ahead of it; or a
    field in a list element added later without a default."""
    last = first
    for field in definition.subcons:
        revision = max(first, revision_of(field))  # a field is as old as its type at most
        if revision < last:
            raise ValueError(f"{owner}.{field.name}: revision {revision} after a field of "
                             f"revision {last}; add fields at the end")
        last = revision
        inner = element(field)
        if inner is None:
            continue
        check_definition(f"{owner}.{field.name}", inner, revision)
        for sub in inner.subcons:
            if revision_of(sub) > revision and sub.default is NO_DEFAULT:
                raise ValueError(f"{owner}.{field.name}.{sub.name}: added in revision "
                                 f"{revision_of(sub)} without a default for older peers")


def element_defaults(definition: c.Struct, revision: int) -> dict[str, dict[str, object]]:
    """For each list field whose elements have fields a `revision` peer does not send: those
    fields and the defaults a decoder fills in, so every element has every key."""
    out: dict[str, dict[str, object]] = {}
    for field in definition.subcons:
        inner = element(field)
        late = {} if inner is None else {sub.name: sub.default for sub in inner.subcons
                                          if revision_of(sub) > revision}
        if late:
            out[field.name] = late
    return out
