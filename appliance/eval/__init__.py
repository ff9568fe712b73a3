"""Evaluation workbench: golden sets, model comparison runs, recommendation and calibration."""
