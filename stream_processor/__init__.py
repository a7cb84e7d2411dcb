"""Kafka → classify → route → idempotent sinks → commit. See processor.py."""
