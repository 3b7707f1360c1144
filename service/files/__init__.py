"""Files: uploads streamed to disk, their records, contents and training-data checks."""
