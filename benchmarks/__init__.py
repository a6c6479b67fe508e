"""Performance measures, each against the naive way in the same run: `python -m benchmarks.run` (make bench)."""
