"""Reading results: tables of scores, the learning/forgetting frontier, the claims checked against a
run, the mechanism probes, the tether lesson and the sampling-temperature calibration."""
