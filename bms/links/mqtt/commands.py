"""Commands over MQTT: a JSON payload on `<prefix>/<pack_id>/cmd/<name>` in, one JSON
result object (for `cmd/<name>/result`) out.
Why and how: docs/internals.md, bms/links/mqtt/commands.py."""

from __future__ import annotations

import json
import logging
import math
import reprlib
from collections.abc import Iterable
from dataclasses import dataclass

from bms.host import views
from bms.host.frames import VALUE_KINDS
from bms.host.policy import (
    COMMANDS,
    LISTED,
    MODE_WORDS,
    STATE_WORDS,
    CommandPolicy,
    listed,
    near_names,
)
from protocol import messages as pm

log = logging.getLogger(__name__)

# The error codes that are not the protocol's (the others are pm.ErrorCode names).
BAD_JSON = "BAD_JSON"
UNKNOWN_COMMAND = "UNKNOWN_COMMAND"
NOT_ENABLED = pm.ErrorCode.NOT_ENABLED.name  # the policy's refusal: the protocol's own code
SHOWN_CHARS = 80  # a value quoted in a reason is cut to this


class Refusal(Exception):
    """A command refused: the result's error code and reason."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class Parsed:
    """A command as far as it can be taken without the device: its name, the `id` to echo
    and the JSON object; or, in `refused`, its whole result already (a refusal)."""

    name: str
    ident: object = None
    obj: dict | None = None
    refused: dict | None = None


def handle_command(name: str, payload: bytes, policy: CommandPolicy | None, device,
                   now_s: float) -> dict:
    """The result object for command `name` with its JSON `payload`, done on `device` (a
    bms.host.device.Device) at `now_s` if `policy` allows it (None: nothing is enabled). Never
    raises; a refused command changes nothing and its result says why (module docstring)."""
    return run_command(parse_command(name, payload, policy), policy, device, now_s)


def parse_command(name: str, payload: bytes, policy: CommandPolicy | None) -> Parsed:
    """The name, the policy's gate and the JSON: what needs no device, so the MQTT session's
    thread does it as a message arrives and the control loop never parses a payload. The
    payload is bounded before it gets here (bms.links.mqtt.inbound)."""
    policy = policy if policy is not None else CommandPolicy()
    try:
        obj, bad_json = _decode(payload), None
    except Refusal as exc:
        obj, bad_json = None, exc
    raw_id = obj.get("id") if isinstance(obj, dict) else None
    good_id = raw_id is None or (isinstance(raw_id, int | float | str)
                                 and not isinstance(raw_id, bool))
    ident = raw_id if good_id else None
    try:
        if name not in COMMANDS:
            raise Refusal(UNKNOWN_COMMAND, f"no command {_shown(name)}; the commands are "
                                           f"{', '.join(COMMANDS)}")
        if not policy.enabled(name):
            raise Refusal(NOT_ENABLED, policy.not_enabled(name))
        if bad_json is not None:
            raise bad_json
        if not isinstance(obj, dict):
            raise Refusal(BAD_JSON, f"the payload is a JSON {_json_type(obj)}, not an object; "
                                    f"send {EXAMPLES[name]}")
        if not good_id:
            raise Refusal(pm.ErrorCode.BAD_TYPE.name,
                          f"id = {_shown(raw_id)}: must be a JSON string or number (it is "
                          "echoed in the result)")
    except Refusal as exc:
        return Parsed(name, ident, refused=_refused(name, ident, exc.code, exc.detail))
    return Parsed(name, ident, obj)


def run_command(parsed: Parsed, policy: CommandPolicy | None, device, now_s: float) -> dict:
    """The result of a parsed command, done on `device` (on the control loop) through the
    protocol request a serial host would send, held to `policy` by the device."""
    if parsed.refused is not None:
        return parsed.refused
    policy = policy if policy is not None else CommandPolicy()
    try:
        done = HANDLERS[parsed.name](parsed.obj, policy, device, now_s)
    except Refusal as exc:
        return _refused(parsed.name, parsed.ident, exc.code, exc.detail)
    except Exception as exc:  # the device's own fault: refuse, log, keep serving
        log.exception("MQTT command %s failed", parsed.name)
        return _refused(parsed.name, parsed.ident, pm.ErrorCode.INTERNAL.name,
                        f"the device could not do it: {type(exc).__name__}: "
                        f"{_shown(str(exc))}")
    return {"id": parsed.ident, "command": parsed.name, "ok": True, **done}


def _refused(name: str, ident: object, code: str, detail: str) -> dict:
    return {"id": ident, "command": name, "ok": False,
            "error": {"code": code, "detail": detail}}


# --- the payload ------------------------------------------------------------------------

EXAMPLES = {
    "state": '{"state": "' + '" | "'.join(STATE_WORDS) + '"}',
    "clear-faults": "{}",
    "service-reset": "{}",
    "balancing": '{"mode": "' + '" | "'.join(MODE_WORDS) + '"}',
    "config": '{"get": [NAME, ...]} or {"set": {NAME: VALUE, ...}}',
    "inject": '{"spec": "AT:KIND[:key=value,...]"}',
    "set-time": '{"utc_s": SECONDS_SINCE_1970}',
    "reset": "{}",
    "factory-defaults": "{}",
}


def _decode(payload: bytes) -> object:
    """The payload as JSON (RFC 8259: UTF-8, finite numbers, each key once); BAD_JSON."""
    try:
        text = payload if isinstance(payload, str) else bytes(payload).decode("utf-8")
    except (TypeError, ValueError) as exc:
        raise Refusal(BAD_JSON, f"the payload is not UTF-8 text ({exc})") from None
    if not text.strip():
        raise Refusal(BAD_JSON, "the payload is empty; send a JSON object, {} at least")
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite,
                          object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise Refusal(BAD_JSON, f"the payload is not JSON: {exc}") from None
    except (ValueError, RecursionError) as exc:  # the hooks below, too deep, too long
        raise Refusal(BAD_JSON, f"the payload is not usable JSON: {_cut(str(exc), 200)}"
                      ) from None


def _no_constant(word: str) -> float:
    raise ValueError(f"{word} is not JSON; numbers must be finite")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {_shown(text)} is beyond a 64-bit float")
    return value


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    obj: dict = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"the key {_shown(key)} is given more than once in an object")
        obj[key] = value
    return obj


def _json_type(value: object) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number")


def _fields(obj: dict, command: str, allowed: tuple[str, ...]) -> None:
    unknown = [k for k in obj if k not in (*allowed, "id")]
    if unknown:
        raise Refusal(pm.ErrorCode.BAD_VALUE.name,
                      f"{listed(map(_shown, unknown))}: not a field of {command}; "
                      f"allowed: {', '.join((*allowed, 'id'))}, as in {EXAMPLES[command]}")


def _word(obj: dict, command: str, key: str, words: Iterable[str]) -> str:
    """The word `obj[key]` gives: BAD_VALUE/BAD_TYPE when it is none of `words` (whether
    the policy allows it is the device's to say, as for a protocol request)."""
    _fields(obj, command, (key,))
    words = tuple(words)
    if key not in obj:
        raise Refusal(pm.ErrorCode.BAD_VALUE.name,
                      f"{key} missing; send {EXAMPLES[command]}")
    word = obj[key]
    if not isinstance(word, str):
        raise Refusal(pm.ErrorCode.BAD_TYPE.name,
                      f"{key} = {_shown(word)}: must be a string, one of {', '.join(words)}")
    if word not in words:
        raise Refusal(pm.ErrorCode.BAD_VALUE.name,
                      f"{key} = {_shown(word)}: allowed: {', '.join(words)}")
    return word


# --- the commands -------------------------------------------------------------------------

def _ask(device, request: object, now_s: float, expected: type,
         policy: CommandPolicy) -> object:
    """The device's answer under `policy`; a Nack becomes a Refusal with its ErrorCode name
    and reason."""
    reply = device.handle(request, now_s, who="MQTT command", policy=policy)
    if isinstance(reply, pm.Nack):
        try:
            code = pm.ErrorCode(reply.error).name
        except ValueError:
            code = str(reply.error)
        raise Refusal(code, reply.detail)
    if not isinstance(reply, expected):
        raise Refusal(pm.ErrorCode.INTERNAL.name, f"{type(request).__name__} was answered "
                                                  f"with {type(reply).__name__}")
    return reply


def _state(obj: dict, policy: CommandPolicy, device, now_s: float) -> dict:
    word = _word(obj, "state", "state", STATE_WORDS)
    _ask(device, pm.CommandRequest(int(STATE_WORDS[word]), 0), now_s, pm.Ack, policy)
    return {"state": word}


def _action(command: pm.Command):
    """A command of no arguments (`{}`): clear-faults, service-reset, reset,
    factory-defaults."""
    name = command.name.lower().replace("_", "-")

    def act(obj: dict, policy: CommandPolicy, device, now_s: float) -> dict:
        _fields(obj, name, ())
        _ask(device, pm.CommandRequest(int(command), 0), now_s, pm.Ack, policy)
        return {}
    return act


def _balancing(obj: dict, policy: CommandPolicy, device, now_s: float) -> dict:
    word = _word(obj, "balancing", "mode", MODE_WORDS)
    _ask(device, pm.CommandRequest(int(pm.Command.BALANCING_MODE), int(MODE_WORDS[word])),
         now_s, pm.Ack, policy)
    return {"mode": word}


def _inject(obj: dict, policy: CommandPolicy, device, now_s: float) -> dict:
    _fields(obj, "inject", ("spec",))
    spec = obj.get("spec")
    if not isinstance(spec, str):
        raise Refusal(pm.ErrorCode.BAD_TYPE.name if "spec" in obj else
                      pm.ErrorCode.BAD_VALUE.name,
                      f"spec = {_shown(spec)}: send {EXAMPLES['inject']}")
    _ask(device, pm.Inject(spec), now_s, pm.Ack, policy)
    return {"spec": spec}


def _set_time(obj: dict, policy: CommandPolicy, device, now_s: float) -> dict:
    _fields(obj, "set-time", ("utc_s",))
    utc_s = obj.get("utc_s")
    if not isinstance(utc_s, int | float) or isinstance(utc_s, bool):
        raise Refusal(pm.ErrorCode.BAD_TYPE.name if "utc_s" in obj else
                      pm.ErrorCode.BAD_VALUE.name,
                      f"utc_s = {_shown(utc_s)}: send {EXAMPLES['set-time']}")
    _ask(device, pm.SetTime(float(utc_s)), now_s, pm.Ack, policy)
    return {"utc_s": utc_s}


def _config(obj: dict, policy: CommandPolicy, device, now_s: float) -> dict:
    _fields(obj, "config", ("get", "set"))
    if "get" in obj and "set" in obj:
        raise Refusal(pm.ErrorCode.BAD_VALUE.name,
                      "get and set in one payload; send one of them (a set answers with the "
                      "values it leaves in effect)")
    by_name = {p.name: p for p in device.params}
    if "set" in obj:
        return _set(obj["set"], by_name, policy, device, now_s)
    wanted = obj.get("get", [])
    if not isinstance(wanted, list) or not all(isinstance(w, str) for w in wanted):
        raise Refusal(pm.ErrorCode.BAD_TYPE.name,
                      f"get = {_shown(wanted)}: must be a list of parameter names ([] for all)")
    if wanted:
        chosen = {text: _select(text, by_name) for text in wanted}
        unknown = [text for text, ids in chosen.items() if not ids]
        if unknown:
            raise Refusal(pm.ErrorCode.UNKNOWN_PARAM.name, _unknown(unknown, by_name))
        # a section and a name in it, or a name twice: each once
        ids = list(dict.fromkeys(i for found in chosen.values() for i in found))
    else:
        ids = [p.id for p in device.params]
    reply = _ask(device, pm.GetConfig(tuple(ids)), now_s, pm.ConfigValues, policy)
    return {"values": _values(device, reply)}


def _set(changes: object, by_name: dict, policy: CommandPolicy, device,
         now_s: float) -> dict:
    if not isinstance(changes, dict):
        raise Refusal(pm.ErrorCode.BAD_TYPE.name,
                      f"set = {_shown(changes)}: must be an object of parameter names and "
                      "values")
    if not changes:
        raise Refusal(pm.ErrorCode.BAD_VALUE.name,
                      "set = {}: nothing to set; give {NAME: VALUE, ...}")
    unknown = [text for text in changes if text not in by_name]
    if unknown:
        raise Refusal(pm.ErrorCode.UNKNOWN_PARAM.name, _unknown(unknown, by_name))
    params = [(by_name[text], value) for text, value in changes.items()]
    # Values as JSON gave them: the device checks the policy, their type (2.5 for an int, 1
    # for a bool are BAD_TYPE) and range, as it does a protocol host's.
    request = pm.SetConfig(tuple({"param_id": p.id, "kind": int(VALUE_KINDS[p.kind]),
                                  "value": value} for p, value in params))
    return {"values": _values(device, _ask(device, request, now_s, pm.ConfigValues,
                                             policy))}


def _select(text: str, by_name: dict) -> list[int]:
    """The ids `text` names: a parameter, or a section (`limits`, `protection.CELL_...`)."""
    if text in by_name:
        return [by_name[text].id]
    prefix = text.rstrip(".") + "."
    return [p.id for name, p in by_name.items() if text and name.startswith(prefix)]


def _values(device, reply: pm.ConfigValues) -> dict:
    return {device.param_by_id[v["param_id"]].name: views.config_value(v) for v in reply.values}


def _unknown(texts: list[str], by_name: dict) -> str:
    """Each unknown name (the first few) with the names it may have meant."""
    shown = [f"{_shown(t)}: no such parameter; {near_names(t, list(by_name), SHOWN_CHARS)}"
             for t in texts[:LISTED]]
    more = f"; and {len(texts) - LISTED} more unknown" if len(texts) > LISTED else ""
    return "; ".join(shown) + more


def _shown(value: object) -> str:
    """A value quoted in a reason, cut short: the reason must not echo a huge payload."""
    return _cut(_REPR.repr(value), SHOWN_CHARS)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


_REPR = reprlib.Repr()  # keyword arguments only from Python 3.12
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict = 2, 4, 4
_REPR.maxstring = _REPR.maxlong = _REPR.maxother = SHOWN_CHARS


HANDLERS = {"state": _state, "clear-faults": _action(pm.Command.CLEAR_FAULTS),
            "service-reset": _action(pm.Command.SERVICE_RESET), "balancing": _balancing,
            "config": _config, "inject": _inject, "set-time": _set_time,
            "reset": _action(pm.Command.RESET),
            "factory-defaults": _action(pm.Command.FACTORY_DEFAULTS)}
