"""CAN links to inverters: the firmware's published limits, state and faults as a field
frame set (pylon-lv, pylon-hv) defined in DBC files, and the inverter's keep-alive back.

    spec = parse_bus_spec("virtual:bench")           # INTERFACE:CHANNEL[@BITRATE]
    frames = frame_set("pylon-lv")                   # cantools database, periods, bitrate
    link = CanLink(spec, frames, device)             # a runtime field link, or poll(now_s)
    bus = open_bus(spec, frames.bitrate)             # the other end (an inverter)

docs/can.md describes the frames; docs/internals.md the reasons.
"""
