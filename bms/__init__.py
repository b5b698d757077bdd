"""Sodium-ion BMS firmware emulator: the firmware and its runtime."""

__version__ = "0.1.0"
