"""Driving processes: starting the scripts and the Jobs API as a student would, reading their event logs, waiting."""
