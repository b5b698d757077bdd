"""The function codes the Modbus server answers, as pymodbus custom PDUs: 03 (read holding
registers) with its count checked as the standard asks, and every other code but 06 and 16
(writes) refused with ILLEGAL_FUNCTION under its own code (on RTU, those pymodbus can frame:
`custom_pdus`).

pymodbus, left to itself, answered a code it does not know - and a read of 0 or over 125
registers - with function 0x80 (no function) and exception 01, and served its own
diagnostics (07, 08, 0B, 0C, 11, 14, 2B 0E: counters, "Pymodbus" as the server's id) and
coil reads (01, 02, 05) on a device that has none.
"""

from __future__ import annotations

import functools

from pymodbus.constants import ExcCodes
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.pdu.register_message import ReadHoldingRegistersRequest

SERVED = (3, 6, 16)  # read holding registers, write one, write many


class ReadHolding(ReadHoldingRegistersRequest):
    """03, whose count out of 1..125 is ILLEGAL_DATA_VALUE (pymodbus failed to decode it)."""

    def decode(self, data: bytes) -> None:
        self.address, self.count = int.from_bytes(data[0:2], "big"), int.from_bytes(
            data[2:4], "big")

    async def datastore_update(self, context, device_id: int) -> ModbusPDU:
        if not 1 <= self.count <= self.MAX_COUNT:
            return ExceptionResponse(self.function_code, ExcCodes.ILLEGAL_VALUE)
        return await super().datastore_update(context, device_id)


class Refused(ModbusPDU):
    """A function this server does not serve: ILLEGAL_FUNCTION, under the function's code.
    It keeps pymodbus's RTU frame size for the code."""

    def decode(self, data: bytes) -> None:
        """Nothing in it is looked at."""

    async def datastore_update(self, context, device_id: int) -> ModbusPDU:
        return ExceptionResponse(self.function_code, ExcCodes.ILLEGAL_FUNCTION)


def _refused(code: int, sized_by: type[ModbusPDU] | None) -> type[ModbusPDU]:
    sizes = {} if sized_by is None else {"rtu_frame_size": sized_by.rtu_frame_size,
                                         "rtu_byte_count_pos": sized_by.rtu_byte_count_pos}
    return type(f"Refused{code:02X}", (Refused,), {"function_code": code, **sizes})


@functools.cache  # the classes once, not again at each reopening of the server
def custom_pdus(transport: str) -> tuple[type[ModbusPDU], ...]:
    """TCP: every code 1..127 but the served ones (128 and above are exception responses;
    the MBAP header says where a frame ends). RTU: only the codes whose frame size pymodbus
    knows from the code alone - an RTU frame has no length, and a code whose size cannot
    be told jammed pymodbus's framer for the next ~500 bytes (its own classes skip a byte
    and resynchronise); 2B (read device identification) is sized by its sub-function and
    stays pymodbus's."""
    if transport == "tcp":
        return (ReadHolding, *(_refused(code, None) for code in range(1, 0x80)
                               if code not in SERVED))
    return (ReadHolding, *(_refused(code, known) for code, (known, _) in
                           sorted(DecodePDU.pdu_table.items())
                           if code not in SERVED
                           and (known.rtu_frame_size or known.rtu_byte_count_pos)))
