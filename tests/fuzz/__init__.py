"""Fuzzing: hypothesis properties for every place that reads outside input (the protocol
decoder, the configuration and cell profile loaders, the replay CSV reader, the MQTT
command handler). Bad input gets a typed error that names what was wrong, and changes
nothing; `benchmarks/fuzz_protocol.py` runs the decoder on a million frames."""
