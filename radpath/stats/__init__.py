"""Statistics on the ground floor: metrics with confidence intervals, the patient-level
bootstrap, DeLong's test and calibration. Plain numpy, scipy and scikit-learn; nothing of
radpath's data, models or training."""
