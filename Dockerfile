# One image for the whole fleet; the command picks the service:
#   docker run file-dropbox python -m services.auth
#   (auth | socket_gateway | file_uploader | file_service_manager | pool_aggregator)
# docker-compose.yml and kubernetes/ start each service exactly that way.

# ---- build: compile wheels that have no binary for this platform (wsaccel, ...) ----
FROM python:3.11.13-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*

# The runtime copies this virtualenv whole; no compiler reaches the final image.
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY . /src
# Runtime dependencies only: no [dev] extra (pytest, playwright, secantusdb stay out).
RUN pip install --upgrade pip setuptools wheel \
 && pip install /src

# The source tree the services run from (/app): services/ plus frontend/ that the
# gateway serves at "/". frontend/ may be absent in early builds; keep an empty one.
RUN mkdir -p /app \
 && cp -r /src/services /app/services \
 && if [ -d /src/frontend ]; then cp -r /src/frontend /app/frontend; else mkdir /app/frontend; fi \
 && python -m compileall -q /app/services /opt/venv/lib

# ---- runtime ----
FROM python:3.11.13-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="file-dropbox" \
      org.opencontainers.image.description="File Dropbox services (auth, socket_gateway, file_uploader, file_service_manager, pool_aggregator)"

# A fixed numeric uid so Kubernetes can check runAsNonRoot without a passwd lookup.
RUN groupadd --system --gid 10001 dropbox \
 && useradd --system --uid 10001 --gid dropbox --home-dir /app --no-create-home --shell /usr/sbin/nologin dropbox

COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=root:root /app /app

# PYTHONDONTWRITEBYTECODE: the root filesystem is read-only in Kubernetes (bytecode
# is precompiled above). HOST=0.0.0.0: settings.listen_address defaults to loopback,
# which a container port cannot reach.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0

# Run from /app so `python -m services.<name>` and the gateway's frontend/ resolve
# against the copied source tree.
WORKDIR /app
USER 10001:10001

# socket_gateway, auth, file_uploader, file_service_manager, pool_aggregator
EXPOSE 5000 5001 5002 5003 5004

CMD ["python", "-c", "import sys; print('usage: docker run <image> python -m services.<name>\\n  name: auth | socket_gateway | file_uploader | file_service_manager | pool_aggregator\\n  configuration: environment variables, see .env.example and docs/OPERATIONS.md'); sys.exit(64)"]
