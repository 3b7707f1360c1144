"""Models: the registry of base models, fine-tuned models and `/v1/models`."""
