"""analytics: class impact (Welch t-tests), PIEs, robustness, PIE export, the summary."""
