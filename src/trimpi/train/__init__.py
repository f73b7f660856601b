"""Training stages: perception warm-up, VM-CPT and SFT (one code path), and RL (`trimpi.train.rl`)."""
