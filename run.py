"""Entry point of a source checkout: the @hydra.main app of icl_gd.app, composed from conf/ next to this file.

python run.py                                        # one job, the defaults in conf/config.yaml
python run.py -m method=icl,gd demos=1,2,4,8 seed=0,1,2   # a sweep; the comparison runs at its end

The same app is `python -m icl_gd ...` and, once installed, the `icl-gd ...` console script.
"""

from __future__ import annotations

from icl_gd.app import main

if __name__ == "__main__":
    main()
