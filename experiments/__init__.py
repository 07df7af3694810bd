"""Experiment configs: one `get_config()` per file, launched by `launch.py`."""
