# syntax=docker/dockerfile:1
# The wideep operator image: `wideep run` as a numeric non-root user.
#
#   docker build -t ghcr.io/wideep/wideep-operator:0.1.0 .
#
# Base image: pinned to an exact Python patch release and Debian release. For an immutable reference
# append the digest your registry resolves it to (python:3.11.14-slim-bookworm@sha256:...).

# ---------------------------------------------------------------------------- builder
FROM python:3.11.14-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml ./
COPY tools/constraints.txt tools/docker-install.sh tools/
COPY operator/ operator/
# Builds the wheel and installs it with pinned dependencies (wheels only, nothing compiled) into /opt/wideep.
RUN sh tools/docker-install.sh /src /opt/wideep

# ---------------------------------------------------------------------------- runtime
FROM python:3.11.14-slim-bookworm AS runtime
# No build tools, no installer: drop the base image's pip, setuptools and wheel; add the numeric user.
RUN python -m pip uninstall --yes --quiet pip setuptools wheel \
 && groupadd --system --gid 65532 wideep \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin wideep
COPY --from=builder /opt/wideep /opt/wideep
ENV PATH=/opt/wideep/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["wideep"]
CMD ["run"]
