"""Tests of getting a broker: the local node, the container, the cluster and its commands, the images."""
