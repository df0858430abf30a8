"""Training: the step and the loop (loop.py), device/precision choice (accel.py)."""
