"""How `bms-emu` says a refused input: one block under the command's name, said once.

`bms_emu.main` says it so, and so does a fleet's pack, which runs `run` in a child of its own.
"""

from __future__ import annotations

from bms.data.validation import InputError

EXIT_NO_LINK = 4  # a command that needs a link (serial, MQTT, CAN) could not open it


def input_error_text(command: str, exc: InputError) -> str:
    """`bms-emu COMMAND: error: ...`; a problem list whose source is the command itself (its
    options) does not name it again."""
    prog = f"bms-emu {command}"
    body = str(exc).removeprefix(f"{prog}: ") if exc.source == prog else str(exc)
    return f"{prog}: error: {body}"
