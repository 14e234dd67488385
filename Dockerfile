# lem-dcbm: the LEM DCBM 400/600 powermeter module, standalone, in a container.
#
#   docker build -t lem-dcbm .
#   podman build --format docker -t lem-dcbm .     # docker format keeps the HEALTHCHECK
#   docker build -t lem-dcbm --build-arg BASE=my-registry/python:3.12-slim .
#   docker run -v "$PWD/config/real-meter.yaml:/config/config.yaml:ro" \
#       -v lem-dcbm-data:/var/lib/lem-dcbm -e EV_MQTT_BROKER_HOST=192.168.10.1 lem-dcbm
#
# BASE must be a Debian-based image with Python 3.10 or newer, `python3 -m venv` and
# useradd (python:*-slim, or Debian with python3-venv). Both stages use the same base, so
# the venv built in the first runs unchanged in the second. scripts/container-test builds
# this file and runs the image against the meter simulator.
ARG BASE=python:3.12-slim

FROM ${BASE} AS build
# pip settings for where PyPI is reached through a mirror, a local index or a proxy with
# its own CA (pip's own variables; unset when not given, then pip uses PyPI).
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_TRUSTED_HOST
ARG PIP_CERT
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    LEM_DCBM_HOME=/opt/lem-dcbm

# Not editable (the sources stay in this stage); wheels only, so no compiler is needed;
# every dependency at the version pinned in constraints.txt. pip and setuptools leave the
# venv afterwards: the runtime image installs nothing.
WORKDIR /src
COPY pyproject.toml README.md manifest.yaml constraints.txt ./
COPY lem_dcbm ./lem_dcbm
RUN python3 -m venv "$LEM_DCBM_HOME/.venv" \
    && "$LEM_DCBM_HOME/.venv/bin/python" -m pip install --only-binary=:all: \
        --constraint constraints.txt . \
    && "$LEM_DCBM_HOME/.venv/bin/python" -m pip check \
    && "$LEM_DCBM_HOME/.venv/bin/python" -m pip uninstall --yes --quiet pip setuptools \
    && "$LEM_DCBM_HOME/.venv/bin/lem-dcbm" --version

FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LEM_DCBM_HOME=/opt/lem-dcbm

# An unprivileged user with a numeric id (so runAsNonRoot can check it) owning the volume.
RUN groupadd --gid 10001 lem-dcbm \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/lem-dcbm \
        --shell /usr/sbin/nologin lem-dcbm \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/lem-dcbm /var/lib/lem-dcbm/journal \
        /var/lib/lem-dcbm/health
COPY --from=build /opt/lem-dcbm /opt/lem-dcbm

# Broker and topic prefix as the EVerest manager passes them; override with -e.
# The journal (one sub-directory per module id) and the heartbeats (one file per module
# id) live in the volume, with no config needed: a journal_dir in the config takes
# precedence over the default.
ENV PATH=/opt/lem-dcbm/.venv/bin:${PATH} \
    EV_MQTT_BROKER_HOST=mosquitto \
    EV_MQTT_BROKER_PORT=1883 \
    EV_MQTT_EVEREST_PREFIX=everest/ \
    LEM_DCBM_STATE_DIR=/var/lib/lem-dcbm/journal \
    LEM_DCBM_HEALTH_DIR=/var/lib/lem-dcbm/health

VOLUME ["/var/lib/lem-dcbm"]
WORKDIR /var/lib/lem-dcbm
USER 10001:10001

# Healthy while the module reads the meter and publishes (a heartbeat each cycle, once a
# second by default; every module id's heartbeat in the directory must be fresh);
# unhealthy when that stops for 10 s, whether the module hangs or the meter is
# unreachable: three failed checks 5 s apart, so within 25 s. The start period
# covers the meter's initial connection retries. `python -m lem_dcbm.health` is
# `lem-dcbm health` without the CLI's imports (a quarter of the CPU per check).
HEALTHCHECK --interval=5s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "lem_dcbm.health", "--max-age", "10"]

# -e LEM_DCBM_EVEREST_API=1 serves EVerest's external powermeter API instead of the module
# protocol (docs/everest-api.md).
ENTRYPOINT ["lem-dcbm", "run"]
CMD ["--config", "/config/config.yaml"]
