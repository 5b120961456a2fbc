"""Pieces every probe shares: the evaluation context, run settings (data folder, device, CPU
threads), encoder features, baselines, data errors, train/test overlap, structures and report
writing."""
