"""Before auth serves: migrations, the admin account, and production's refusal of its default password."""

from __future__ import annotations

import sys

from . import accounts
from .accounts import bootstrap_admin
from .deps import Deps


def prepare(deps: Deps) -> None:
    """Before serving: apply the migrations, make sure the admin account exists (retried by runtime).

    In production, a stored admin whose password is still the development default stops
    the process (exit 2, like a default secret in the environment): SystemExit is not
    retried by ``runtime.prepare``.
    """
    deps.store.migrate()
    bootstrap_admin(deps.store, deps.passwords, deps.settings.admin_user, deps.settings.admin_password)
    if deps.settings.common.env_name.lower() == "production" and accounts.admin_password_is_default(deps):
        print(f"auth: configuration error: the stored admin {deps.settings.admin_user!r} still has the development "
              "default password; delete that account in PostgreSQL (auth re-creates it from ADMIN_PASSWORD) "
              "or set another password hash before starting with DROPBOX_ENV=production", file=sys.stderr)
        sys.exit(2)
