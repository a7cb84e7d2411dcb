"""Experiment Intelligence server: the statistics engine and the decisions built on it."""
