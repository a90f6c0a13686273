"""Analyses of trained models and data: spurious cues, activation geometry, steering, misalignment."""
