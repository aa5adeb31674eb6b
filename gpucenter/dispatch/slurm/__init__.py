"""The Slurm site kind: sbatch/squeue/sacct/sacctmgr."""
