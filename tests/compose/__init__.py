"""Tests of Docker Compose: the broker, workers, the cluster and the Jobs API profiles."""
