"""Inference: `/v1/chat/completions` for local base models, fine-tuned models and checkpoints."""
