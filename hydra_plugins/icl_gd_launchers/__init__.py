"""The project's launchers (hydra/launcher=submitit_slurm, slurm_a100, submitit_local): hydra-submitit-launcher's,
plus a timeout_min / signal_delay_s check and a record of jobs that end without a result. See submitit_launchers.py."""
