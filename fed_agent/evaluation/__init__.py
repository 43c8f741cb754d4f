"""Quality and latency of agents."""
