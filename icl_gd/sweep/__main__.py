"""`python -m icl_gd.sweep compare|report <sweep folder>`: see `icl_gd.sweep.cli`."""

from icl_gd.sweep.cli import main

if __name__ == "__main__":
    main()
