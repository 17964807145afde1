"""Simulators shipped with pi-agent so it can be run and tested without Google or a Pi."""
