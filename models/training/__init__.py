"""Training pipeline for the scratch detector (not run in CI)."""
