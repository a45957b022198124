"""Tests of the class tools: provisioning a roster, the class status and its flags, removal at term end."""
