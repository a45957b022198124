"""Tests of the repository itself: its docs, its mutants, the suite's ordering, the benchmark."""
