"""Every side effect of a journey: rendering, delivery providers, event routing."""
