"""The class tools: provisioning a roster's users and vhosts, with the sample roster and definitions."""
