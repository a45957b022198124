"""Tests of the task queue module and the Jobs API lab."""
