"""Engines that train: the local engine (TRL + LoRA on this machine) and, later, upstream."""
