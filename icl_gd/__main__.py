"""`python -m icl_gd ...`: the same Hydra app as `python run.py ...` and the `icl-gd` console script."""

from icl_gd.app import main

if __name__ == "__main__":
    main()
