"""Datasets: every supported format loaded, validated and normalised into typed records."""
