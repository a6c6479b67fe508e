"""Analyses of ICL vs GD beyond the output distribution: Dai et al. metrics, sparsity, order sensitivity."""
