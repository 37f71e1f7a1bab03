"""File Dropbox client library and CLI (``python -m client``)."""

from .api import ConnectionLost, DropboxClient, DropboxError, UploadFailed, wsaccel_active

__all__ = ["ConnectionLost", "DropboxClient", "DropboxError", "UploadFailed", "wsaccel_active"]
