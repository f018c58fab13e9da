"""Training engine: patient-bag data, the Lightning module, checkpoints and run records."""
