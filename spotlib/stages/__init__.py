"""One module per study stage; each exposes `run(profile, progress=True) -> dict`.

The notebooks call these functions and draw their results; the logic lives here so
tests can cover it.
"""
