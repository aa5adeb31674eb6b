"""Slurm sites: accounts and limits synced from allocations, usage read back from sacct."""
