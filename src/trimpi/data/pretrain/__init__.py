"""The micro base's pretraining corpus: generated perception, policy-following and general items."""
