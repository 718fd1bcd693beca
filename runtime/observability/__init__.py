"""Observability: MLflow tracking of runs and sweeps (training-health metrics land here too)."""
