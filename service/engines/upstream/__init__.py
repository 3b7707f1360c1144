"""The upstream engine: jobs run on an OpenAI-compatible provider, mirrored here as they go."""
