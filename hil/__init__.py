"""What drives the firmware: the simulated sodium-ion pack, loads, injections, runner, plots."""
