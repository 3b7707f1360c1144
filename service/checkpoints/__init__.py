"""Checkpoints of jobs and the permissions that share them with other projects."""
