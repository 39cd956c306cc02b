"""Data: raw text corpora, pretraining shards, masking, and task loaders."""
