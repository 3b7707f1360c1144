"""OpenAI-compatible fine-tuning service for IAPosteManager."""

__version__ = "0.1.0"
