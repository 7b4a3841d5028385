"""The master process and what it needs from the system: listeners, privileges, systemd."""
