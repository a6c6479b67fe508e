"""The linear-regression lab: linear attention and H3 trained in context against one-step (preconditioned) GD.

Modules, upstream first: data (task samplers), theory (closed-form risks, pure), models (LSA, H3, LoRA and the
baselines, one shared prefix-prediction call), constructions (GD by formula), train (Adam on fresh tasks),
evaluate (one loop for every predictor), plots, config (validation) and lab (`run_job`, what the runner calls).
"""
