"""Wiring by role: settings, adapters, services, the read-model replay, the CLI, local launchers."""
