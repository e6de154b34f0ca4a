"""What tests of several tiers share: the documented result of every example."""
