"""Experiments through the bundles: the runner (one function per stage), the main job, the protocol, the report."""
