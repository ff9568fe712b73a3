"""Batch jobs: many task inputs in one file, run through the gateway at a bounded pace."""
