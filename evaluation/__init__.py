"""Evaluation harness, reports and the closed-loop demo (the paper's experiment on this stack)."""
