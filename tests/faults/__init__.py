"""Tests of faults injected for real: kills, broker restarts, cut connections, failover between nodes."""
