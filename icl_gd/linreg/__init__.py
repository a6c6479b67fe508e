"""The linear-regression lab: linear attention and H3 trained in context against one-step (preconditioned) GD.

Modules, upstream first: schemas (the job's dataclasses) and checks (value checks) under config (typed, validated
job), data (task samplers), theory (closed-form risks, pure), models (LSA, H3, LoRA and the baselines, one shared
prefix-prediction call), constructions (GD by formula), train (Adam on fresh tasks), evaluate (one loop for every
predictor), grid (points, groups, random streams), tables, phases (train or construct a group's model), risks
(theory, evaluation, curves), lora (the adaptation phase), plots and figures, and lab (`run_job`, what the runner
calls).
"""
