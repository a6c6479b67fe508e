"""hydra-submitit-launcher's SlurmLauncher and LocalLauncher, with what a sweep on a real cluster needs:

* before any job is submitted, timeout_min and signal_delay_s are checked together (icl_gd.sweep.launchers);
* the launcher waits for every job of the array, and a job that ended without a result (scancel, out of memory,
  a SIGKILL, a time limit without the signal) no longer aborts the wait with an exception: its status.json is
  marked failed with the SLURM state and its log, an ERROR line names it, and the sweep goes on to the comparison of
  the finished jobs and ends with exit 1 (the end-of-sweep summary), so a rerun with the same hydra.sweep.dir redoes
  only the jobs that did not finish;
* a job that got submitit's time-limit signal and was not requeued (max_num_timeout, 0 by default) has it said in
  its status.json, with the fix. A preempted job is requeued by submitit (checkpoint: the same job again, from its
  start); the other jobs of the array are their own SLURM jobs and keep their results.

Hydra finds plugins by scanning hydra_plugins; this module defines nothing when hydra-submitit-launcher is not
installed (the launcher check then says what to install).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

try:
    from hydra_plugins.hydra_submitit_launcher import submitit_launcher as _plugin
except ImportError:  # the slurm extra is not installed: no launcher here (icl_gd.sweep.callbacks says so)
    _plugin = None

log = logging.getLogger(__name__)
_SIGNALLED_AT: list[float] = []  # job side: when submitit's time-limit/preemption signal called checkpoint()


if _plugin is not None:
    from hydra.core.singleton import Singleton
    from hydra.core.utils import JobReturn, JobStatus, filter_overrides
    from omegaconf import OmegaConf

    class _Recording(_plugin.BaseSubmititLauncher):
        """The shared part of the project's SLURM and local launchers."""

        def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
            """Job side, in submitit's signal handler: note the time, then requeue as the plugin does."""
            _SIGNALLED_AT.append(time.time())
            return super().checkpoint(*args, **kwargs)

        def __call__(self, sweep_overrides, job_dir_key, job_num, job_id, singleton_state) -> JobReturn:
            started = time.time()
            ret = super().__call__(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)
            if _SIGNALLED_AT:  # the signal came and the job was not requeued: say so in its status.json
                from icl_gd.sweep.launchers import note_time_limit  # noqa: PLC0415

                folder = _job_folder_of(ret)
                if folder is not None:
                    note_time_limit(folder, self.params, _SIGNALLED_AT[0] - started)
            return ret

        def launch(self, job_overrides, initial_job_idx):
            import submitit  # noqa: PLC0415 -- lazy, as in the plugin

            from icl_gd.sweep.launchers import check_signal_timing  # noqa: PLC0415

            assert self.config is not None and self.hydra_context is not None
            check_signal_timing(self.params)
            params = dict(self.params)
            folder = params.pop("submitit_folder")
            init = (
                {f"{self._EXECUTOR}_max_num_timeout": params.pop("max_num_timeout")}
                if ("max_num_timeout" in params)
                else {}
            )
            executor = submitit.AutoExecutor(cluster=self._EXECUTOR, folder=folder, **init)
            base = set(OmegaConf.structured(_plugin.BaseQueueConf).keys())
            executor.update_parameters(
                **{
                    k if k in base else f"{self._EXECUTOR}_{k}": v
                    for k, v in params.items()
                    if k != "_target_"
                }
            )
            sweep_dir = Path(str(self.config.hydra.sweep.dir))
            log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {sweep_dir}")
            sweep_dir.mkdir(parents=True, exist_ok=True)
            if "mode" in self.config.hydra.sweep:
                sweep_dir.chmod(int(str(self.config.hydra.sweep.mode), 8))
            job_params = []
            for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
                log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
                job_params.append(
                    (list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state())
                )
            jobs = executor.map_array(self, *zip(*job_params, strict=True))
            # every job is waited for, whatever happened to the ones before it
            return [self._result(job, p[0]) for job, p in zip(jobs, job_params, strict=True)]

        def _result(self, job: Any, overrides: list[str]) -> JobReturn:
            from submitit.core.utils import FailedJobError, UncompletedJobError  # noqa: PLC0415

            try:
                return job.results()[0]
            except (UncompletedJobError, FailedJobError) as e:
                from icl_gd.sweep.launchers import record_ended_without_result  # noqa: PLC0415

                logs = [job.paths.stderr, job.paths.stdout]
                try:
                    folder = self._folder_of(overrides)
                    line = record_ended_without_result(
                        folder, str(job.job_id), _final_state(job), e, logs, self.params
                    )
                    log.error("%s: %s", folder.name, line)
                except Exception as record_error:  # the other jobs must still be waited for
                    log.error(
                        "job %s (%s) ended without a result (%s), and its status.json could not be written: "
                        "%s: %s. Its log: %s",
                        job.job_id,
                        " ".join(overrides),
                        " ".join(str(e).split())[:300],
                        type(record_error).__name__,
                        record_error,
                        logs[0],
                    )
                # the job's status.json is the record (as for a job that failed in Python): the sweep goes on
                return JobReturn(overrides=overrides, status=JobStatus.COMPLETED, _return_value=None)

        def _folder_of(self, overrides: list[str]) -> Path:
            """The job's folder, as run_job names it: hydra.sweep.dir / hydra.sweep.subdir of its config."""
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            return Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)

    def _job_folder_of(ret: JobReturn) -> Path | None:
        try:
            return Path(str(ret.hydra_cfg.hydra.runtime.output_dir))
        except Exception:
            return None

    def _final_state(job: Any) -> str:
        """The job's state as the cluster last said it (submitit caches it; ask once more)."""
        try:
            return str(job.get_info(mode="force").get("State") or job.state)
        except Exception:
            return "UNKNOWN"

    class SlurmLauncher(_Recording, _plugin.SlurmLauncher):
        """hydra/launcher=submitit_slurm (and slurm_a100)."""

    class LocalLauncher(_Recording, _plugin.LocalLauncher):
        """hydra/launcher=submitit_local."""
