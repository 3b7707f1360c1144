"""The local engine: base models on disk, a worker that claims jobs, a trainer process."""
