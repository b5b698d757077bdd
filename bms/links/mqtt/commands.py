"""Commands over MQTT: a JSON payload on `<prefix>/<pack_id>/cmd/<name>` in, one JSON
result object (for `cmd/<name>/result`) out.
Why and how: docs/internals.md, bms/links/mqtt/commands.py."""

from __future__ import annotations

import json
import logging
import math
import reprlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from bms.data.validation import InputError, close_names
from bms.host import views
from bms.host.frames import BALANCING_MODES, COMMAND_REQUESTS, VALUE_KINDS
from protocol import messages as pm

log = logging.getLogger(__name__)

COMMANDS = ("state", "clear-faults", "balancing", "config")
# The words each command takes, from the device's own tables (the protocol's order).
STATE_WORDS: dict[str, pm.Command] = {
    word: command for command, word in COMMAND_REQUESTS.items()
    if word not in ("clear-faults", "service-reset")}  # a service action is not for MQTT
MODE_WORDS: dict[str, pm.BalancingMode] = {word: mode for mode, word in BALANCING_MODES.items()}
LIMIT_WORDS = {"state": tuple(STATE_WORDS), "balancing": tuple(MODE_WORDS)}
# The error codes that are not the protocol's (those are pm.ErrorCode names).
BAD_JSON = "BAD_JSON"
UNKNOWN_COMMAND = "UNKNOWN_COMMAND"
NOT_ENABLED = "NOT_ENABLED"
SHOWN_CHARS = 80  # a value quoted in a reason is cut to this
LISTED = 5  # names listed in a reason, the rest counted


@dataclass(frozen=True)
class CommandPolicy:
    """Which commands are enabled, and each one's limit: the words `state` and `balancing`
    may be given, the name patterns of the parameters `config` may set; None = no limit.
    A command not in `limits` is off; the default policy enables nothing."""

    limits: Mapping[str, tuple[str, ...] | None] = field(default_factory=dict)

    def enabled(self, command: str) -> bool:
        return command in self.limits

    def allows(self, command: str, word: str) -> bool:
        """Whether an enabled `command` may be given `word` (a state, a mode)."""
        limit = self.limits.get(command)
        return limit is None or word in limit

    def may_set(self, param_name: str) -> bool:
        """Whether `config` may set the parameter (get is always allowed)."""
        limit = self.limits.get("config")
        return limit is None or any(fnmatchcase(param_name, p) for p in limit)

    def describe(self) -> str:
        """The policy as `parse_policy` reads it; "" when nothing is enabled."""
        return ",".join(name if limit is None else f"{name}={'|'.join(limit)}"
                        for name, limit in self.limits.items())


def parse_policy(text: str | None, source: str = "--mqtt-commands",
                 param_names: Iterable[str] | None = None) -> CommandPolicy:
    """A policy from its text: comma-separated commands, each optionally `=` and its limit
    (`|`-separated words for state and balancing, fnmatch patterns of parameter names for
    config; clear-faults takes none). Empty or None enables nothing. With `param_names`
    (the device's parameters), a config pattern that matches none of them is refused too.
    InputError (from `source`) names every bad part and what is allowed."""
    if text is None or not text.strip():
        return CommandPolicy()
    names = None if param_names is None else list(param_names)
    problems: list[str] = []
    limits: dict[str, tuple[str, ...] | None] = {}
    for part in text.split(","):
        command, has_limit, limit_text = (s.strip() for s in part.partition("="))
        shown = repr(part.strip())
        if not command:
            problems.append(f"{shown} in {text!r}: no command; give commands separated by "
                            f"single commas, from: {', '.join(COMMANDS)}")
            continue
        if command not in COMMANDS:
            problems.append(f"{shown}: {command!r} is not a command; allowed: "
                            f"{', '.join(COMMANDS)}")
            continue
        if command in limits:
            problems.append(f"{shown}: {command} given twice; give each command once, its "
                            "words or patterns joined with |")
            continue
        if not has_limit:
            limits[command] = None
            continue
        if command == "clear-faults":
            problems.append(f"{shown}: clear-faults takes no limit; write clear-faults")
            continue
        words = tuple(w.strip() for w in limit_text.split("|"))
        if not all(words):
            problems.append(f"{shown}: an empty word; separate the words with single |, or "
                            f"write {command} alone for no limit")
            continue
        bad = [w for w in words if command in LIMIT_WORDS and w not in LIMIT_WORDS[command]]
        if bad:
            problems.append(f"{shown}: {', '.join(map(repr, bad))} not a {command} word; "
                            f"allowed: {'|'.join(LIMIT_WORDS[command])}")
            continue
        if command == "config" and names is not None:
            unmatched = [w for w in words if not any(fnmatchcase(n, w) for n in names)]
            if unmatched:
                problems.append(f"{shown}: {', '.join(map(repr, unmatched))} matches no "
                                f"parameter; {_near(unmatched[0], names)}")
                continue
        limits[command] = tuple(dict.fromkeys(words))
    if problems:
        raise InputError(source, problems)
    return CommandPolicy(limits)


class Refusal(Exception):
    """A command refused: the result's error code and reason."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


def handle_command(name: str, payload: bytes, policy: CommandPolicy | None, device,
                   now_s: float) -> dict:
    """The result object for command `name` with its JSON `payload`, done on `device` (a
    bms.host.device.Device) at `now_s` if `policy` allows it (None: nothing is enabled). Never
    raises; a refused command changes nothing and its result says why (module docstring)."""
    policy = policy if policy is not None else CommandPolicy()
    try:
        obj, bad_json = _decode(payload), None
    except Refusal as exc:
        obj, bad_json = None, exc
    raw_id = obj.get("id") if isinstance(obj, dict) else None
    good_id = raw_id is None or (isinstance(raw_id, int | float | str)
                                 and not isinstance(raw_id, bool))
    result: dict = {"id": raw_id if good_id else None, "command": name}
    try:
        if name not in COMMANDS:
            raise Refusal(UNKNOWN_COMMAND, f"no command {_shown(name)}; the commands are "
                                           f"{', '.join(COMMANDS)}")
        if not policy.enabled(name):
            enabled = policy.describe() or "none"
            raise Refusal(NOT_ENABLED, f"the {name} command is not enabled here (enabled: "
                                       f"{enabled}); the emulator's --mqtt-commands option "
                                       "enables commands")
        if bad_json is not None:
            raise bad_json
        if not isinstance(obj, dict):
            raise Refusal(BAD_JSON, f"the payload is a JSON {_json_type(obj)}, not an object; "
                                    f"send {EXAMPLES[name]}")
        if not good_id:
            raise Refusal(pm.ErrorCode.BAD_TYPE.name,
                          f"id = {_shown(raw_id)}: must be a JSON string or number (it is "
                          "echoed in the result)")
        result.update(HANDLERS[name](obj, policy, device, now_s))
    except Refusal as exc:
        return result | {"ok": False, "error": {"code": exc.code, "detail": exc.detail}}
    except Exception as exc:  # the device's own fault: refuse, log, keep serving
        log.exception("MQTT command %s failed", name)
        return result | {"ok": False, "error": {
            "code": pm.ErrorCode.INTERNAL.name,
            "detail": f"the device could not do it: {type(exc).__name__}: {_shown(str(exc))}"}}
    return {"id": result.pop("id"), "command": name, "ok": True, **result}


# --- the payload ------------------------------------------------------------------------

EXAMPLES = {
    "state": '{"state": "' + '" | "'.join(STATE_WORDS) + '"}',
    "clear-faults": "{}",
    "balancing": '{"mode": "' + '" | "'.join(MODE_WORDS) + '"}',
    "config": '{"get": [NAME, ...]} or {"set": {NAME: VALUE, ...}}',
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
                      f"{_listed(map(_shown, unknown))}: not a field of {command}; "
                      f"allowed: {', '.join((*allowed, 'id'))}, as in {EXAMPLES[command]}")


def _word(obj: dict, command: str, key: str, words: Iterable[str],
          policy: CommandPolicy) -> str:
    """The word `obj[key]` gives: BAD_VALUE/BAD_TYPE when it is none of `words`, NOT_ENABLED
    when the policy's limit leaves it out."""
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
    if not policy.allows(command, word):
        raise Refusal(NOT_ENABLED, f"{key} = {word!r} is not enabled here; allowed: "
                                   f"{', '.join(policy.limits[command] or ())}")
    return word


# --- the commands -------------------------------------------------------------------------

def _ask(device, request: object, now_s: float, expected: type) -> object:
    """The device's answer; a Nack becomes a Refusal with its ErrorCode name and reason."""
    reply = device.handle(request, now_s, who="MQTT command")
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
    word = _word(obj, "state", "state", STATE_WORDS, policy)
    _ask(device, pm.CommandRequest(int(STATE_WORDS[word]), 0), now_s, pm.Ack)
    return {"state": word}


def _clear_faults(obj: dict, policy: CommandPolicy, device, now_s: float) -> dict:
    _fields(obj, "clear-faults", ())
    _ask(device, pm.CommandRequest(int(pm.Command.CLEAR_FAULTS), 0), now_s, pm.Ack)
    return {}


def _balancing(obj: dict, policy: CommandPolicy, device, now_s: float) -> dict:
    word = _word(obj, "balancing", "mode", MODE_WORDS, policy)
    _ask(device, pm.CommandRequest(int(pm.Command.BALANCING_MODE), int(MODE_WORDS[word])),
         now_s, pm.Ack)
    return {"mode": word}


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
    reply = _ask(device, pm.GetConfig(tuple(ids)), now_s, pm.ConfigValues)
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
    refused = [p.name for p, _ in params if not policy.may_set(p.name)]
    if refused:
        raise Refusal(NOT_ENABLED, f"config may not set {_listed(refused)} here; it may set "
                                   f"the parameters matching {'|'.join(policy.limits['config'])}"
                                   " (and get any)")
    # Values as JSON gave them: the device checks their type (2.5 for an int, 1 for a bool
    # are BAD_TYPE) and range, as it does a serial host's.
    request = pm.SetConfig(tuple({"param_id": p.id, "kind": int(VALUE_KINDS[p.kind]),
                                  "value": value} for p, value in params))
    return {"values": _values(device, _ask(device, request, now_s, pm.ConfigValues))}


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
    shown = [f"{_shown(t)}: no such parameter; {_near(t, list(by_name))}"
             for t in texts[:LISTED]]
    more = f"; and {len(texts) - LISTED} more unknown" if len(texts) > LISTED else ""
    return "; ".join(shown) + more


def _near(text: str, names: list[str]) -> str:
    """Names a mistyped `text` may have meant, or where to find them all."""
    near = close_names(text[:SHOWN_CHARS], names, similar=3, contains=False, last_part=False,
                       limit=4)
    return (f"close names: {', '.join(near)}" if near else
            'config with {"get": []} lists the parameters')


def _shown(value: object) -> str:
    """A value quoted in a reason, cut short: the reason must not echo a huge payload."""
    return _cut(_REPR.repr(value), SHOWN_CHARS)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _listed(items: Iterable[str]) -> str:
    """The first few of `items`, and how many more."""
    items = list(items)
    more = f" and {len(items) - LISTED} more" if len(items) > LISTED else ""
    return ", ".join(items[:LISTED]) + more


_REPR = reprlib.Repr()  # keyword arguments only from Python 3.12
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict = 2, 4, 4
_REPR.maxstring = _REPR.maxlong = _REPR.maxother = SHOWN_CHARS


HANDLERS = {"state": _state, "clear-faults": _clear_faults, "balancing": _balancing,
            "config": _config}
