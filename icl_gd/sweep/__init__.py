"""The sweep level: the jobs of a sweep folder, their pairs, the comparison, the report and its figures.

Modules, upstream first: jobs (Job, labels, pairing rules), tables (interval reductions and the report's tables),
order (order sensitivity of job groups), verdicts (GD vs the ICL-order floor), markdown (the one table writer),
search (the gd_search points of a sweep: collected by compare, tabled and drawn by the report), compare (pair
metrics, comparison files), loading (a sweep folder's files as frames), plots (figures), sections,
report, logger (the W&B runs of both steps), cli (`python -m icl_gd.sweep compare|report DIR`) and callbacks (the
Hydra callback that runs both at the end of a multirun). Nothing is imported here: the callback must stay light.
"""
