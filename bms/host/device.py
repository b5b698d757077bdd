"""The emulator as the protocol sees it: requests answered from the firmware's state.

No I/O and no clock: the runtime hands in each step's measurement and actuation
(`observe`) and each request with the time (`handle`), and sends what comes back. Every
refused request gets a Nack naming the error and why; a refused change changes nothing.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np

from bms import __version__
from bms.core.firmware import CONNECTED, Firmware
from bms.core.signals import Actuation, Measurement, State
from bms.data.chemistry import Chemistry
from bms.data.config import FirmwareConfig, default_config
from bms.data.parameters import (
    CONFIG_SCHEMA_VERSION,
    ConfigChange,
    ParameterError,
    apply_changes,
    catalogue,
    changes_between,
    limits,
    value_of,
)
from bms.data.validation import InputError
from bms.host.frames import (
    BALANCING_MODES,
    COMMAND_REQUESTS,
    VALUE_KINDS,
    contactor_bits,
    parameter_entry,
)
from bms.host.periodic import Periodic
from bms.host.policy import TRUSTED, CommandPolicy
from bms.host.records import (
    ConfigLogRow,
    cell_health_entries,
    config_log_entry,
    counter_entries,
    fault_events,
    log_entry,
)
from protocol import messages as pm
from protocol.framing import LATEST_REVISION, MAX_PAYLOAD_BYTES, REVISIONS

T = TypeVar("T")
MAX_PAGE = 32  # entries a page holds at most (fewer when a frame is full)
MIN_TELEMETRY_PERIOD_MS = 10
# The wall clock a SetTime may set: 2000-01-01 to 2100-01-01, UTC seconds since 1970.
UTC_MIN_S, UTC_MAX_S = 946_684_800.0, 4_102_444_800.0
# States in which FactoryDefaults waits: the pack is on the bus, or being put on it.
ON_THE_BUS = CONNECTED | {State.PRECHARGE}

log = logging.getLogger(__name__)


MAX_DETAIL_BYTES = 1000  # a Nack's reasons, cut to stay well inside one frame


def nack(request_type: int, code: pm.ErrorCode, detail: str) -> pm.Nack:
    """A refusal with its reasons, shortened if a long list of problems would not fit."""
    data = detail.encode()
    if len(data) > MAX_DETAIL_BYTES:
        detail = data[:MAX_DETAIL_BYTES - 4].decode(errors="ignore") + " ..."
    return pm.Nack(request_type, int(code), detail)


class RequestError(Exception):
    """A request refused; becomes a Nack."""

    def __init__(self, code: pm.ErrorCode, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


class Store(Protocol):
    """What the device shows and keeps of the persistent store
    (`bms.store.persistence.Keeper`): its health (Status), the boot number, each boot's
    wall clock, the configuration-write log."""

    @property
    def failures(self) -> int: ...  # failed saves since start

    @property
    def failing(self) -> bool: ...  # the last save failed

    @property
    def boot(self) -> int: ...  # this boot's number, from 1

    def time_set(self, offset_s: float, now_s: float) -> None: ...  # never raises

    def utc_offsets(self) -> dict[int, float]: ...  # boot -> UTC minus device time

    def config_log_total(self) -> int: ...

    def config_log(self, start: int, count: int) -> Sequence[ConfigLogRow]: ...


@dataclass(frozen=True)
class Identity:
    chemistry: str
    mode: pm.Mode
    n_parallel: int
    capacity_ah: float  # the pack's: cell capacity x parallel cells
    n_temp_sensors: int  # what a measurement carries; in HIL mode a rig must send this many
    pack_id: str = ""  # the pack's name (MQTT topics, the store's name); "" unknown
    serial: str = ""  # "" unknown
    firmware_build: str = "unknown"  # the build, as a VCS describes it


class Device:
    """Answers protocol requests for one firmware instance.

    `inject(spec, now_s)` is given in SIM mode (the simulated pack's fault injection); it
    raises InputError for a bad spec. `on_config_change(who, changes, overrides, now_s)` is
    told of every valid configuration write before it is put in effect (the persistent
    store saves and logs it): who wrote, the parameters written with their old and new
    values, and the overrides the write makes. It raises when it could not keep the write:
    the write is then not in effect, and the answer is a Nack SAVE_FAILED. `store` is the
    persistent store (None: none): its health in Status, the boot number, the wall clock
    of each boot and the configuration-write log. `on_reset` is set by a runtime that can
    restart the firmware (a host's Reset; `bms.runtime.realtime`): without it a Reset is
    refused.
    """

    def __init__(self, firmware: Firmware, chem: Chemistry, identity: Identity,
                 config_overrides: dict | None = None,
                 inject: Callable[[str, float], None] | None = None,
                 on_config_change: Callable[[str, list[ConfigChange], dict, float], None]
                 | None = None, store: Store | None = None):
        self.fw = firmware
        self.on_config_change = on_config_change
        self.store = store
        self.on_reset: Callable[[], None] | None = None
        # Each boot's wall clock (UTC minus device time), as hosts set it (SetTime).
        self.utc_offsets: dict[int, float] = {} if store is None else store.utc_offsets()
        self._who = ""  # who sent the request being handled
        self._revision = LATEST_REVISION  # the protocol revision it came in
        self.telemetry_revision = LATEST_REVISION  # that of the Subscribe in effect
        self.chem = chem
        self.identity = identity
        self.overrides = dict(config_overrides or {})
        self.inject = inject
        self.params = catalogue(firmware.cfg)
        self.limits = limits(chem, firmware.n_series, identity.capacity_ah)
        self.param_by_id = {p.id: p for p in self.params}
        self.measurement: Measurement | None = None
        self.act: Actuation | None = None
        self.subscriptions: dict[int, Periodic] = {}  # response type -> its schedule
        self.events_subscribed = False  # FaultEvents go out as they happen
        self.not_enabled: Counter[str] = Counter()  # requests a policy refused, by type
        self._answers: dict[type, Callable[[object, float], object]] = {
            pm.GetInfo: lambda _m, _t: self.info(),
            pm.GetStatus: lambda _m, now_s: self.status(now_s),
            pm.GetCellVoltages: lambda _m, _t: self.cell_voltages(),
            pm.GetTemperatures: lambda _m, _t: self.temperatures(),
            pm.GetCellSoc: lambda _m, _t: self.cell_soc(),
            pm.GetBalancing: lambda _m, _t: self.balancing(),
            pm.GetFaultLog: lambda m, _t: self.fault_log(m),
            pm.GetParameterList: lambda m, _t: self.parameter_list(m),
            pm.GetConfig: lambda m, _t: self.config_values(list(m.param_ids)),
            pm.SetConfig: lambda m, now_s: self.set_config(m, now_s),
            pm.CommandRequest: lambda m, now_s: self.command(m, now_s),
            pm.Subscribe: lambda m, now_s: self.subscribe(m, now_s),
            pm.TimeSync: lambda m, now_s: pm.TimeInfo(m.host_time_s, now_s),
            pm.Inject: lambda m, now_s: self.injection(m, now_s),
            pm.SetTime: lambda m, now_s: self.set_time(m, now_s),
            pm.GetCounters: lambda m, _t: self.counters(m),
            pm.GetCellHealth: lambda m, _t: self.cell_health(m),
            pm.GetConfigLog: lambda m, _t: self.config_log(m),
        }
        # What telemetry may carry: the responses that a plain Get request returns.
        self.telemetry: dict[int, Callable[[float], object]] = {
            pm.BY_CLASS[pm.Status].type_id: self.status,
            pm.BY_CLASS[pm.CellVoltages].type_id: lambda _t: self.cell_voltages(),
            pm.BY_CLASS[pm.Temperatures].type_id: lambda _t: self.temperatures(),
            pm.BY_CLASS[pm.CellSoc].type_id: lambda _t: self.cell_soc(),
            pm.BY_CLASS[pm.BalancingState].type_id: lambda _t: self.balancing(),
        }

    # --- fed by the runtime ----------------------------------------------------------

    def observe(self, m: Measurement | None, act: Actuation) -> None:
        if m is not None:
            self.measurement = m
        self.act = act

    def handle(self, msg: object, now_s: float, who: str = "protocol",
               policy: CommandPolicy = TRUSTED, revision: int = LATEST_REVISION) -> object:
        """The response to a request: its answer, an Ack, or a Nack. `who` names the sender
        (a link, an MQTT command topic) in the log of configuration writes; `policy` is
        what that way in may change (Nack NOT_ENABLED otherwise, counted in `not_enabled`);
        `revision` the protocol revision the request came in (and its answer goes out in)."""
        self._who = who
        self._revision = revision
        answer = self._answers.get(type(msg))
        if answer is None:
            return nack(pm.BY_CLASS[type(msg)].type_id, pm.ErrorCode.NOT_A_REQUEST,
                        f"{type(msg).__name__} is not a request this device answers")
        refusal = policy.refusal(msg, self.param_by_id)
        if refusal is not None:
            self.not_enabled[type(msg).__name__] += 1
            return nack(pm.BY_CLASS[type(msg)].type_id, pm.ErrorCode.NOT_ENABLED, refusal)
        try:
            return answer(msg, now_s)
        except RequestError as exc:
            return nack(pm.BY_CLASS[type(msg)].type_id, exc.code, exc.detail)

    def telemetry_due(self, now_s: float) -> list[object]:
        """The subscribed messages whose period has come round."""
        return [self.telemetry[msg_type](now_s)
                for msg_type, schedule in self.subscriptions.items() if schedule.due(now_s)]

    def fault_events(self, act: Actuation) -> list[pm.FaultEvent]:
        """The step's fault events as FaultEvent messages for a link that subscribed to
        them (none otherwise); after the step, whose log holds them as its last entries."""
        if not self.events_subscribed or not act.events:
            return []
        return fault_events(act.events, self.fw.log.recorded, self.boot, self.utc_offsets)

    def stop_telemetry(self) -> None:
        """Nobody reads it any more (the link went down, the firmware restarted)."""
        self.subscriptions.clear()
        self.events_subscribed = False

    def restarted(self, firmware: Firmware) -> None:
        """The runtime restarted the firmware (a host's Reset) as `firmware`, which has not
        stepped yet: answers come from it, and telemetry and this boot's wall clock are
        forgotten, as a power cycle forgets them."""
        self.fw = firmware
        self.measurement = self.act = None
        self.stop_telemetry()
        self.utc_offsets.pop(self.boot, None)  # no store: boot 0 throughout

    @property
    def boot(self) -> int:
        """This boot's number (the store's count of starts); 0 unknown (no store)."""
        return 0 if self.store is None else self.store.boot

    # --- answers ------------------------------------------------------------------------

    def info(self) -> pm.DeviceInfo:
        ident = self.identity
        caps = pm.Capability.CONFIG_SET | pm.Capability.TELEMETRY
        caps |= pm.Capability.HIL if ident.mode == pm.Mode.HIL else 0
        caps |= pm.Capability.INJECT if self.inject is not None else 0
        revision = self._revision
        return pm.DeviceInfo(
            revision, __version__, ident.chemistry, int(ident.mode), self.fw.n_series,
            ident.n_parallel, ident.n_temp_sensors, ident.capacity_ah, int(caps),
            pack_id=ident.pack_id, serial=ident.serial, firmware_build=ident.firmware_build,
            config_schema_version=CONFIG_SCHEMA_VERSION, max_page_entries=MAX_PAGE,
            protocol_revisions=tuple(REVISIONS),
            message_types=tuple(t for t in sorted(pm.REGISTRY) if pm.in_revision(t, revision)))

    def status(self, now_s: float) -> pm.Status:
        act, m = self.act, self.measurement
        est = None if act is None else act.estimate
        v = None if m is None else m.cell_voltage_v
        t = None if m is None or len(m.temperature_c) == 0 else m.temperature_c
        nan = math.nan
        warning, alarm, fault = (0, 0, 0) if act is None else act.level_bitmaps
        return pm.Status(
            time_s=now_s,
            state=State(act.state if act is not None else self.fw.state).code,
            contactors=contactor_bits(self.fw.contactors),
            fault_bitmap=0 if act is None else act.fault_bitmap,
            charge_limit_a=0.0 if act is None else act.charge_limit_a,
            discharge_limit_a=0.0 if act is None else act.discharge_limit_a,
            pack_voltage_v=nan if v is None else float(v.sum()),
            current_a=nan if m is None else m.current_a,
            soc_pct=nan if est is None else act.soc * 100.0,  # none before an estimate
            soh_pct=nan if est is None else est.soh_pct,
            remaining_wh=nan if est is None else est.remaining_wh,
            runtime_s=nan if est is None or est.runtime_s is None else est.runtime_s,
            **_extremes("cell_v", v), **_extremes("temp_c", t),
            balancing_count=0 if act is None else int(np.count_nonzero(act.balance_mask)),
            **self._store_fields(),
            charge_voltage_limit_v=(nan if act is None or act.charge_voltage_limit_v is None
                                    else act.charge_voltage_limit_v),
            discharge_voltage_limit_v=(nan if act is None or act.discharge_voltage_limit_v is None
                                       else act.discharge_voltage_limit_v),
            warning_bitmap=warning, alarm_bitmap=alarm, fault_level_bitmap=fault,
            bus_voltage_v=nan if m is None else m.bus_voltage_v,
            contactor_feedback=0 if m is None else contactor_bits(m.contactors),
        )

    def _store_fields(self) -> dict:
        store = self.store
        if store is None:
            return {"store": 0, "save_failures": 0}
        bits = pm.STORE_BITS["kept"] | (pm.STORE_BITS["failing"] if store.failing else 0)
        return {"store": bits, "save_failures": store.failures}

    def cell_voltages(self) -> pm.CellVoltages:
        m = self.measurement
        return pm.CellVoltages(np.empty(0, np.float32) if m is None else m.cell_voltage_v)

    def temperatures(self) -> pm.Temperatures:
        m = self.measurement
        return pm.Temperatures(np.empty(0, np.float32) if m is None else m.temperature_c)

    def cell_soc(self) -> pm.CellSoc:
        est = None if self.act is None else self.act.estimate
        return pm.CellSoc(np.empty(0, np.float32) if est is None else est.cell_soc * 100.0)

    def balancing(self) -> pm.BalancingState:
        mode = {v: k for k, v in BALANCING_MODES.items()}[self.fw.cfg.balancing.mode]
        mask = (np.zeros(self.fw.n_series, bool) if self.act is None
                else np.asarray(self.act.balance_mask, bool))
        return pm.BalancingState(int(mode), mask)

    def fault_log(self, req: pm.GetFaultLog) -> pm.FaultLogPage:
        entries = list(self.fw.log.entries)
        page = _page(entries, req.start, req.count)
        boot = self.boot
        return self._fitted(lambda kept: pm.FaultLogPage(
            len(entries), self.fw.log.dropped, req.start, kept),
            [log_entry(e, boot, self.utc_offsets) for e in page])

    def counters(self, req: pm.GetCounters) -> pm.CounterPage:
        entries = counter_entries(self.fw.counters, self.identity.capacity_ah)
        return self._fitted(lambda kept: pm.CounterPage(len(entries), req.start, kept),
                            _page(entries, req.start, req.count))

    def cell_health(self, req: pm.GetCellHealth) -> pm.CellHealthPage:
        entries = cell_health_entries(self.fw.estimator)
        return self._fitted(lambda kept: pm.CellHealthPage(len(entries), req.start, kept),
                            _page(entries, req.start, req.count))

    def config_log(self, req: pm.GetConfigLog) -> pm.ConfigLogPage:
        """From the store's log; a device without one has none. A store that cannot be
        read is this device's fault: INTERNAL, logged."""
        if self.store is None:
            return pm.ConfigLogPage(0, req.start, ())
        try:
            total = self.store.config_log_total()
            rows = self.store.config_log(req.start, min(req.count, MAX_PAGE))
        except Exception as exc:  # noqa: BLE001 - a damaged or vanished store
            log.exception("reading the configuration-write log failed")
            raise RequestError(pm.ErrorCode.INTERNAL, f"the store could not be read: {exc}"
                               ) from None
        return self._fitted(lambda kept: pm.ConfigLogPage(total, req.start, kept),
                            [config_log_entry(r, self.utc_offsets) for r in rows])

    def parameter_list(self, req: pm.GetParameterList) -> pm.ParameterList:
        page = _page(self.params, req.start, req.count)
        persisted = self.on_config_change is not None  # it keeps every write
        return self._fitted(lambda kept: pm.ParameterList(len(self.params), req.start, kept),
                            [parameter_entry(p, self.limits[p.id], persisted) for p in page])

    def _fitted(self, page: Callable[[tuple], object], entries: list) -> object:
        """The page with as many of `entries` as fit one frame in the request's revision:
        a client asks on from where the entries it got end."""
        while True:
            answer = page(tuple(entries))
            try:
                size = len(pm.encode_payload(answer, self._revision)[1])
            except ValueError:  # its sending fails too, and is answered with Nack INTERNAL
                return answer
            if len(entries) <= 1 or size <= MAX_PAYLOAD_BYTES:
                return answer
            entries.pop()

    def config_values(self, ids: list[int]) -> pm.ConfigValues:
        unknown = [i for i in ids if i not in self.param_by_id]
        if unknown:
            raise RequestError(pm.ErrorCode.UNKNOWN_PARAM,
                               f"no parameter with id {', '.join(f'0x{i:04X}' for i in unknown)}; "
                               f"GetParameterList lists them")
        repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
        if repeated:  # else a request that fits one frame asks for an answer that does not
            raise RequestError(pm.ErrorCode.BAD_VALUE,
                               f"id {', '.join(f'0x{i:04X}' for i in repeated)} asked for more "
                               "than once; ask for each parameter once")
        cfg = self.fw.cfg
        return pm.ConfigValues(tuple(
            {"param_id": i, "kind": int(VALUE_KINDS[self.param_by_id[i].kind]),
             "value": value_of(cfg, self.param_by_id[i])} for i in ids))

    def set_config(self, req: pm.SetConfig, now_s: float) -> pm.ConfigValues:
        """Each value must come as its parameter's ValueKind: 1 (INT) for a FLOAT
        parameter is BAD_TYPE, as the spec says, not taken as 1.0."""
        kind_names = {code: name for name, code in VALUE_KINDS.items()}
        self._apply([(v["param_id"], v["value"]) for v in req.values], now_s,
                    [kind_names[v["kind"]] for v in req.values])
        return self.config_values([v["param_id"] for v in req.values])

    def command(self, req: pm.CommandRequest, now_s: float) -> pm.Ack:
        ack = pm.Ack(pm.BY_CLASS[pm.CommandRequest].type_id)
        allowed = pm.commands_in(self._revision)
        if req.command not in allowed:  # an unknown one, or newer than the request
            raise RequestError(pm.ErrorCode.BAD_VALUE, f"command {req.command}; allowed in "
                               f"protocol {REVISIONS[self._revision]}: "
                               + ", ".join(f"{int(c)} {c.name}" for c in allowed))
        if req.command != pm.Command.BALANCING_MODE and req.argument != 0:
            raise RequestError(pm.ErrorCode.BAD_VALUE,
                               f"`argument` {req.argument} for {pm.Command(req.command).name}: "
                               "it takes none (0); only BALANCING_MODE takes one")
        if req.command == pm.Command.RESET:
            self.reset()
            return ack
        if req.command == pm.Command.FACTORY_DEFAULTS:
            self.factory_defaults(now_s)
            return ack
        if req.command == pm.Command.BALANCING_MODE:
            if req.argument not in BALANCING_MODES:
                raise RequestError(pm.ErrorCode.BAD_VALUE,
                                   f"balancing mode {req.argument}; allowed: "
                                   + ", ".join(f"{int(k)} {v}" for k, v in BALANCING_MODES.items()))
            mode_param = next(p for p in self.params if p.name == "balancing.mode")
            self._apply([(mode_param.id, BALANCING_MODES[pm.BalancingMode(req.argument)])],
                        now_s)
            return ack
        why = self.fw.request(COMMAND_REQUESTS[pm.Command(req.command)])
        if why is not None:
            raise RequestError(pm.ErrorCode.NOT_NOW, why)
        return ack

    def subscribe(self, req: pm.Subscribe, now_s: float) -> pm.Ack:
        wanted: dict[int, Periodic] = {}
        event_type = pm.BY_CLASS[pm.FaultEvent].type_id
        allowed = [t for t in (*self.telemetry, event_type) if pm.in_revision(t, self._revision)]
        events = False
        for sub in req.subscriptions:
            if sub["msg_type"] not in allowed:  # a type of a later revision included
                names = ", ".join(f"0x{t:02X} {pm.REGISTRY[t].name}" for t in allowed)
                raise RequestError(pm.ErrorCode.BAD_VALUE,
                                   f"msg_type 0x{sub['msg_type']:02X} cannot be subscribed; "
                                   f"allowed: {names}")
            if sub["msg_type"] == event_type:  # as they happen: the period is not used
                events = True
                continue
            if sub["period_ms"] < MIN_TELEMETRY_PERIOD_MS:
                raise RequestError(pm.ErrorCode.OUT_OF_RANGE,
                                   f"period_ms = {sub['period_ms']}; at least "
                                   f"{MIN_TELEMETRY_PERIOD_MS}")
            wanted[sub["msg_type"]] = Periodic(sub["period_ms"] / 1000.0, first_due_s=now_s)
        self.subscriptions = wanted
        self.events_subscribed = events
        self.telemetry_revision = self._revision
        return pm.Ack(pm.BY_CLASS[pm.Subscribe].type_id)

    def set_time(self, req: pm.SetTime, now_s: float) -> pm.Ack:
        """This boot's wall clock, kept as the offset to device time (and in the store)."""
        if not UTC_MIN_S <= req.utc_s < UTC_MAX_S:  # NaN too
            raise RequestError(pm.ErrorCode.OUT_OF_RANGE,
                               f"utc_s = {req.utc_s!r}; UTC seconds since 1970-01-01, from "
                               f"{UTC_MIN_S:.0f} (2000-01-01) to below {UTC_MAX_S:.0f} "
                               "(2100-01-01)")
        offset_s = req.utc_s - now_s
        self.utc_offsets[self.boot] = offset_s
        if self.store is not None:
            self.store.time_set(offset_s, now_s)
        return pm.Ack(pm.BY_CLASS[pm.SetTime].type_id)

    def reset(self) -> None:
        """Asks the runtime to restart the firmware before its next step."""
        if self.on_reset is None:
            raise RequestError(pm.ErrorCode.NOT_IN_THIS_MODE,
                               "RESET restarts the firmware of a running `serve`; this one "
                               "(a headless run) has none to restart")
        self.on_reset()

    def factory_defaults(self, now_s: float) -> None:
        """Every configuration write undone: the chemistry's defaults for this pack, kept
        and logged as a write of the parameters that change. Never under a connected pack:
        the defaults move the protection thresholds."""
        state = State(self.fw.state)
        if state in ON_THE_BUS:
            raise RequestError(pm.ErrorCode.NOT_NOW,
                               f"FACTORY_DEFAULTS in {state}: the defaults move the "
                               "protection thresholds under a pack on the bus; send STANDBY "
                               "first (the contactors open), then FACTORY_DEFAULTS")
        cfg = default_config(self.chem, self.fw.n_series, self.identity.capacity_ah)
        self._put_in_effect(cfg, {}, changes_between(self.fw.cfg, cfg), now_s,
                            f"{self._who}, factory defaults")

    def injection(self, req: pm.Inject, now_s: float) -> pm.Ack:
        if self.inject is None:
            raise RequestError(pm.ErrorCode.NOT_IN_THIS_MODE,
                               "fault injection needs the emulator's own simulated pack "
                               "(serve --sim); inject into the rig instead")
        try:
            self.inject(req.spec, now_s)
        except InputError as exc:
            raise RequestError(pm.ErrorCode.BAD_VALUE, "; ".join(exc.problems)) from None
        return pm.Ack(pm.BY_CLASS[pm.Inject].type_id)

    def _apply(self, changes: list[tuple[int, object]], now_s: float,
               sent_kinds: list[str] | None = None) -> None:
        """All or nothing; a valid write is reported to `on_config_change` with each
        parameter written, changed or not, and takes effect only once that has kept it.
        `sent_kinds`: the kind each value came as (`apply_changes`)."""
        try:
            cfg, overrides = apply_changes(self.overrides, changes, self.chem, self.fw.n_series,
                                           self.identity.capacity_ah, sent_kinds)
        except ParameterError as exc:
            raise RequestError(pm.ErrorCode[exc.code], "; ".join(exc.problems)) from None
        old = self.fw.cfg
        written = tuple(self.param_by_id[pid] for pid, _ in changes)
        self._put_in_effect(cfg, overrides, [ConfigChange(p.name, value_of(old, p),
                                                          value_of(cfg, p)) for p in written],
                            now_s, self._who)

    def _put_in_effect(self, cfg: FirmwareConfig, overrides: dict,
                       changes: list[ConfigChange], now_s: float, who: str) -> None:
        """A valid write: kept (`on_config_change`, logged as by `who`) first, then in
        effect; SAVE_FAILED and nothing changed when it could not be kept."""
        if self.on_config_change is not None:  # saved first: only a kept write takes effect
            try:
                self.on_config_change(who, changes, overrides, now_s)
            except Exception as exc:  # noqa: BLE001 - whatever failed, the write is refused
                raise RequestError(pm.ErrorCode.SAVE_FAILED,
                                   f"the write could not be saved, so it is not in effect "
                                   f"and nothing changed: {exc}") from None
        self.fw.reconfigure(cfg)
        self.overrides = overrides


def _extremes(prefix: str, values: np.ndarray | None) -> dict:
    """The lowest and highest readable (finite) values and their indices; NaN and 0 when
    there is none (an unreadable reading is the sensor fault's to name)."""
    readable = None if values is None else np.isfinite(values)
    if readable is None or not readable.any():
        return {f"{prefix}_min": math.nan, f"{prefix}_min_index": 0,
                f"{prefix}_max": math.nan, f"{prefix}_max_index": 0}
    lo = int(np.argmin(np.where(readable, values, np.inf)))
    hi = int(np.argmax(np.where(readable, values, -np.inf)))
    return {f"{prefix}_min": float(values[lo]), f"{prefix}_min_index": lo,
            f"{prefix}_max": float(values[hi]), f"{prefix}_max_index": hi}


def _page(entries: list[T], start: int, count: int) -> list[T]:
    """The entries a paged request asks for: from `start`, at most `count` and MAX_PAGE."""
    return entries[start:start + min(count, MAX_PAGE)]
