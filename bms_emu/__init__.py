"""The `bms-emu` command line."""
