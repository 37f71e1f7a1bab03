"""File Dropbox services. Each subpackage is one process: ``python -m services.<name>``."""
