"""Tests of bad input and refusals: one line and a documented exit code each; security; queue limits."""
