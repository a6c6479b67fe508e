"""Entry point: compose the config with Hydra and run one job (or, with -m, one job per sweep point).

python run.py                                        # one job, the defaults in conf/config.yaml
python run.py -m method=icl,gd demos=1,2,4,8 seed=0,1,2   # a sweep; the comparison runs at its end
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from icl_gd.errors import ConfigError, DataError, ModelNotFoundError
from icl_gd.runner import run

log = logging.getLogger("icl_gd")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    group = Path(hc.sweep.dir).name if multirun else None
    try:
        run(cfg, group=group, raise_on_failure=not multirun)
    except (ConfigError, DataError, ModelNotFoundError) as e:  # a clear message, no traceback
        log.error("%s: %s", type(e).__name__, e)
        sys.exit(2)
    except Exception as e:  # recorded in status.json where a job folder exists; said here in any case
        log.error("%s: %s (see %s in the job folder for the traceback)", type(e).__name__, e, "status.json")
        sys.exit(1)


if __name__ == "__main__":
    main()
