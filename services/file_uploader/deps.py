"""Everything file_uploader's routes and handlers use, wired once by create_app."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.ports import AuthLookup

from .config import Settings
from .tus_uploads import TusUploads
from .uploads import UploadService


@dataclass(frozen=True)
class Deps:
    settings: Settings
    uploads: UploadService
    auth: AuthLookup
    tus: TusUploads  # the tus door's use cases, over ``uploads``
