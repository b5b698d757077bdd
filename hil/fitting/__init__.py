"""`bms-emu fit`: a cell profile from a user's lab data (lab_data, segments, ecm_fit,
ocv_fit, capacity, profile_toml, validation; fit ties them together), and the lab procedure
run on the simulated cell (lab_procedure)."""
