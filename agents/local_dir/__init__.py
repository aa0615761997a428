"""The local-directory agent: the local directory as a ``Source`` of the run pipeline."""
