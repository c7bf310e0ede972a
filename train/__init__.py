"""train: populations of dense and pruned checkpoints (gradual magnitude pruning)."""
