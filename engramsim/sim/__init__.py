"""The SimPy model of an inference server with Engram memory tiers."""
