"""Learned image compression plugin for moo-opt (training, evaluation and reports arrive in later
work)."""
