# One image for the whole fleet; the command picks the service:
#   docker run file-dropbox python -m services.auth
#   (auth | socket_gateway | file_uploader | file_service_manager | pool_aggregator)
# docker-compose.yml and kubernetes/ start each service exactly that way.
#
# PYTHON_IMAGE: production builds use the official image, pinned by digest (a tag can be
# re-pushed; a digest cannot). Where no registry can be reached, `make images` passes a
# stand-in built from Debian packages (docker/local/Dockerfile, devtools/containers.py).
# It must be Debian-based (apt-get below) and provide `python` 3.11+ with venv.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:86adf8dbadc3d6e82ee5dd2c74bec2e1c2467cdad47886280501df722372d2e1

# ---- build: the virtualenv with the runtime dependencies ----
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# Every locked dependency has a wheel for CPython 3.11 x86_64 (or is pure Python), so no
# compiler is installed. Another platform may need one: --build-arg BUILD_PACKAGES=build-essential
ARG BUILD_PACKAGES=""
RUN if [ -n "$BUILD_PACKAGES" ]; then \
      apt-get update && apt-get install -y --no-install-recommends $BUILD_PACKAGES \
      && rm -rf /var/lib/apt/lists/*; \
    fi

# The runtime copies this virtualenv whole; no build tool reaches the final image.
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Dependencies first, from pyproject.toml and the lock alone: a change to the code rebuilds
# only the layers below, not this one (seconds instead of a full pip install).
COPY pyproject.toml requirements.lock /src/
# Runtime dependencies only (no [dev] extra: pytest, playwright, secantusdb stay out), at the
# versions requirements.lock pins. The project itself is not installed: the services run
# from the source tree in /app. The package index and the CA bundle come in as build
# secrets (devtools/containers.py passes the host's), so neither is written into a layer;
# without them pip uses PyPI and the image's own certificates.
RUN --mount=type=secret,id=pipconf --mount=type=secret,id=cacert \
    if [ -s /run/secrets/pipconf ]; then export PIP_CONFIG_FILE=/run/secrets/pipconf; fi; \
    if [ -s /run/secrets/cacert ]; then export PIP_CERT=/run/secrets/cacert; fi; \
    python -c "import tomllib; print('\\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/runtime.txt \
 && pip install --prefer-binary -c /src/requirements.lock -r /tmp/runtime.txt \
 && (pip uninstall -y pip setuptools wheel >/dev/null 2>&1 || true)

COPY . /src
# The source tree the services run from (/app): services/ plus frontend/ that the
# gateway serves at "/", and the healthcheck. frontend/ may be absent in early builds.
RUN mkdir -p /app \
 && cp -r /src/services /app/services \
 && cp /src/docker/healthcheck.py /app/healthcheck.py \
 && if [ -d /src/frontend ]; then cp -r /src/frontend /app/frontend; else mkdir /app/frontend; fi \
 && python -m compileall -q /app /opt/venv/lib

# ---- runtime ----
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="file-dropbox" \
      org.opencontainers.image.description="File Dropbox services (auth, socket_gateway, file_uploader, file_service_manager, pool_aggregator)"

# tini as PID 1: it forwards SIGTERM to the service at once (a Python PID 1 would not get the
# kernel's default signal actions) and reaps children, so `docker stop` and Kubernetes stop
# a service gracefully: in-flight messages are nacked back, uploads stay resumable.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log

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

# /ready of whichever service this container runs (healthcheck.py finds it and its port).
# Kubernetes ignores HEALTHCHECK and uses the manifests' probes on the same path.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=6 \
    CMD ["python", "/app/healthcheck.py"]

ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["python", "-c", "import sys; print('usage: docker run <image> python -m services.<name>\\n  name: auth | socket_gateway | file_uploader | file_service_manager | pool_aggregator\\n  configuration: environment variables, see .env.example and docs/OPERATIONS.md'); sys.exit(64)"]
