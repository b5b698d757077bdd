"""Which requests a link may make: reading the pack always; changing it (a state, a fault
clear, a service reset, the balancing mode, a parameter, a fault injection, the wall clock,
a restart, the factory defaults) only where the link's command policy enables it.

The serial port is trusted (a cable to the rig or the bench); a broker's topics are open to
whoever the broker lets publish, so every way in over MQTT (`cmd/*` and the protocol on
`proto/in`) is held to one policy, which enables nothing unless told to.
Why and how: docs/internals.md, bms/host/policy.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from bms.data.parameters import Parameter
from bms.data.validation import InputError, close_names
from bms.host.frames import BALANCING_MODES, COMMAND_REQUESTS
from protocol import messages as pm

# What a policy may enable: each is an MQTT command (`cmd/<name>`) and the protocol
# requests that do the same.
COMMANDS = ("state", "clear-faults", "service-reset", "balancing", "config", "inject",
            "set-time", "reset", "factory-defaults")
# The words `state` and `balancing` take, from the device's own tables (the protocol's order).
STATE_WORDS: dict[str, pm.Command] = {
    word: command for command, word in COMMAND_REQUESTS.items()
    if word not in ("clear-faults", "service-reset")}
MODE_WORDS: dict[str, pm.BalancingMode] = {str(word): mode
                                           for mode, word in BALANCING_MODES.items()}
LIMIT_WORDS = {"state": tuple(STATE_WORDS), "balancing": tuple(MODE_WORDS)}
WORD_OF_MODE = {int(mode): word for word, mode in MODE_WORDS.items()}
NO_LIMIT = ("clear-faults", "service-reset", "inject", "set-time", "reset",
            "factory-defaults")  # all or nothing
# Requests that change nothing in the pack: always allowed. Subscribe only sets what this
# link's own telemetry carries; TimeSync only answers with the device's clock.
READS = frozenset({pm.GetInfo, pm.GetStatus, pm.GetCellVoltages, pm.GetTemperatures,
                   pm.GetCellSoc, pm.GetBalancing, pm.GetFaultLog, pm.GetParameterList,
                   pm.GetConfig, pm.Subscribe, pm.TimeSync, pm.GetCounters, pm.GetCellHealth,
                   pm.GetConfigLog})
# Requests other than CommandRequest and SetConfig that change the device: the command
# that enables each (SetTime changes what the log records as the time).
OTHER_WRITES: dict[type, str] = {pm.Inject: "inject", pm.SetTime: "set-time"}
# The command a CommandRequest needs, and its word (None: the command takes no words).
REQUEST_NEEDS: dict[pm.Command, tuple[str, str | None]] = {
    **{command: ("state", word) for word, command in STATE_WORDS.items()},
    pm.Command.CLEAR_FAULTS: ("clear-faults", None),
    pm.Command.SERVICE_RESET: ("service-reset", None),
    pm.Command.RESET: ("reset", None),
    pm.Command.FACTORY_DEFAULTS: ("factory-defaults", None),
}
LISTED = 5  # names listed in a reason, the rest counted
ENABLED_BY = "the emulator's --mqtt-commands option enables commands"


@dataclass(frozen=True)
class CommandPolicy:
    """Which commands are enabled, and each one's limit: the words `state` and `balancing`
    may be given, the name patterns of the parameters `config` may set; None = no limit.
    A command not in `limits` is off; the default policy enables nothing. `trusted`: every
    request allowed, unchecked (the serial port)."""

    limits: Mapping[str, tuple[str, ...] | None] = field(default_factory=dict)
    trusted: bool = False

    def enabled(self, command: str) -> bool:
        return self.trusted or command in self.limits

    def allows(self, command: str, word: str | None) -> bool:
        """Whether an enabled `command` may be given `word` (a state, a mode); a word the
        command does not know (None) only where the command has no limit."""
        limit = None if self.trusted else self.limits.get(command)
        return limit is None or word in limit

    def may_set(self, param_name: str) -> bool:
        """Whether `config` may set the parameter (get is always allowed)."""
        limit = None if self.trusted else self.limits.get("config")
        return limit is None or any(fnmatchcase(param_name, p) for p in limit)

    def describe(self) -> str:
        """The policy as `parse_policy` reads it; "" when nothing is enabled."""
        if self.trusted:
            return ",".join(COMMANDS)
        return ",".join(name if limit is None else f"{name}={'|'.join(limit)}"
                        for name, limit in self.limits.items())

    def not_enabled(self, command: str) -> str:
        """Why `command` is refused when it is off."""
        return (f"the {command} command is not enabled here (enabled: "
                f"{self.describe() or 'none'}); {ENABLED_BY}")

    def refusal(self, request: object, params: Mapping[int, Parameter]) -> str | None:
        """Why this policy refuses a protocol request, or None when it allows it. `params`:
        the device's parameters by id (an unknown id, like a command code that is no
        Command, is the device's to refuse: BAD_VALUE, as on a serial port). A request type
        or a Command this module does not map is refused: new ones are off until mapped."""
        if self.trusted or type(request) in READS:
            return None
        name = type(request).__name__
        if isinstance(request, pm.SetConfig):
            if not self.enabled("config"):
                return f"{name}: {self.not_enabled('config')}"
            names = [params[v["param_id"]].name for v in request.values
                     if v["param_id"] in params]
            refused = [n for n in names if not self.may_set(n)]
            return None if not refused else (
                f"{name}: config may not set {listed(refused)} here; it may set the "
                f"parameters matching {'|'.join(self.limits['config'])} (and get any)")
        if type(request) in OTHER_WRITES:
            command = OTHER_WRITES[type(request)]
            return None if self.enabled(command) else f"{name}: {self.not_enabled(command)}"
        if not isinstance(request, pm.CommandRequest):
            return f"{name} is not a request this link may make"
        if request.command not in set(pm.Command):  # does nothing: the device says BAD_VALUE
            return None
        if request.command == pm.Command.BALANCING_MODE:
            command, word = "balancing", WORD_OF_MODE.get(request.argument)
        elif request.command in REQUEST_NEEDS:
            command, word = REQUEST_NEEDS[pm.Command(request.command)]
        else:
            return (f"{name} command {request.command} "
                    f"{pm.Command(request.command).name}: not a command this link may send")
        label = f"{name} {pm.Command(request.command).name}"
        if not self.enabled(command):
            return f"{label}: {self.not_enabled(command)}"
        if not self.allows(command, word):
            return (f"{label}: {command} {word!r} is not enabled here; allowed: "
                    f"{', '.join(self.limits[command] or ())}")
        return None


TRUSTED = CommandPolicy(trusted=True)


def parse_policy(text: str | None, source: str = "--mqtt-commands",
                 param_names: Iterable[str] | None = None) -> CommandPolicy:
    """A policy from its text: comma-separated commands, each optionally `=` and its limit
    (`|`-separated words for state and balancing, fnmatch patterns of parameter names for
    config; the others take none). Empty or None enables
    nothing. With `param_names` (the device's parameters), a config pattern that matches
    none of them is refused too. InputError (from `source`) names every bad part and what
    is allowed."""
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
        if command in NO_LIMIT:
            problems.append(f"{shown}: {command} takes no limit; write {command}")
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
                                f"parameter; {near_names(unmatched[0], names)}")
                continue
        limits[command] = tuple(dict.fromkeys(words))
    if problems:
        raise InputError(source, problems)
    return CommandPolicy(limits)


def near_names(text: str, names: list[str], shown_chars: int = 80) -> str:
    """Names a mistyped `text` may have meant, or where to find them all."""
    near = close_names(text[:shown_chars], names, similar=3, contains=False, last_part=False,
                       limit=4)
    return (f"close names: {', '.join(near)}" if near else
            'config with {"get": []} lists the parameters')


def listed(items: Iterable[str]) -> str:
    """The first few of `items`, and how many more."""
    items = list(items)
    more = f" and {len(items) - LISTED} more" if len(items) > LISTED else ""
    return ", ".join(items[:LISTED]) + more
