"""Sites: their configuration, health, registry and wiring; Slurm sync and usage."""
