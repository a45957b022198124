"""Tests of the labs' claims, the runner, the demo, the handouts' commands, provisioning."""
