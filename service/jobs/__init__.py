"""Fine-tuning jobs: creation, the status machine, events, and the calls engines make."""
