"""Tests of the two scripts as users run them: sending, working, acknowledging, prefetch, the event log."""
