"""Modbus: the pack as a SunSpec battery (models 1, 802, 803, 804, 805) over Modbus TCP or
RTU, served beside the other links on the same firmware. Reference: docs/modbus.md."""
