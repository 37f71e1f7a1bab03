"""The gateway's HTTP routes: the dashboard (frontend/) at ``/`` and its ``/config.json``.

Socket.IO itself is served by python-socketio in front of this blueprint (``app.py``).
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, send_from_directory

from .deps import Deps

bp = Blueprint("socket_gateway", __name__)


def deps() -> Deps:
    found: Deps = current_app.extensions["deps"]
    return found


@bp.get("/")
def index() -> Response:
    return send_from_directory(deps().settings.frontend_dir, "index.html")


@bp.get("/config.json")
def config_json() -> Response:
    settings = deps().settings
    # Exactly what frontend/api.js loadConfig() reads (client/api.py and bench/ read the URLs too).
    return jsonify({
        "auth_url": settings.public_auth_url,
        "file_service_manager_url": settings.public_file_service_manager_url,
        "pool_aggregator_url": settings.public_pool_aggregator_url,
        "file_uploader_url": settings.public_file_uploader_url,
        "socket_gateway_url": settings.public_socket_gateway_url,  # "" = this page's origin
    })


@bp.get("/<path:filename>")
def static_file(filename: str) -> Response:
    # send_from_directory refuses paths outside frontend/ (404), e.g. "../pyproject.toml".
    return send_from_directory(deps().settings.frontend_dir, filename)
