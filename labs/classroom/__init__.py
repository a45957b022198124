"""The class tools: provisioning a roster's users and vhosts (with the sample roster and definitions), the class's
status at a glance, and removing the roster's accounts."""
