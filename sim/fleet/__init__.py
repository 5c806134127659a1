"""Fleet timeline: multi-year hourly simulation of owned, failed, training and serving cards."""
