"""Training engine: loop, checkpoints, logging, configs, distribution."""
