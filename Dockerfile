# lem-dcbm: the LEM DCBM 400/600 powermeter module, standalone, in a container.
#
#   docker build -t lem-dcbm .
#   docker build -t lem-dcbm --build-arg BASE=my-registry/python:3.12-slim .
#   docker run -v "$PWD/config/real-meter.yaml:/config/config.yaml:ro" \
#       -e EV_MQTT_BROKER_HOST=192.168.10.1 lem-dcbm
#
# The base must be a Debian-based Python (3.10 or newer) image with python3 -m venv.
ARG BASE=python:3.12-slim
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LEM_DCBM_HOME=/opt/lem-dcbm

# The same install as scripts/setup, without the test extras: a venv, then pip install
# of the project (not editable: the sources are removed afterwards).
WORKDIR ${LEM_DCBM_HOME}
COPY pyproject.toml README.md manifest.yaml ./src/
COPY lem_dcbm ./src/lem_dcbm
RUN python3 -m venv "$LEM_DCBM_HOME/.venv" \
    && "$LEM_DCBM_HOME/.venv/bin/python" -m pip install --no-cache-dir ./src \
    && rm -rf ./src

# An unprivileged user with a numeric id (so runAsNonRoot can check it) owning the journal.
RUN useradd --system --uid 10001 --user-group --no-create-home \
        --home-dir /var/lib/lem-dcbm --shell /usr/sbin/nologin lem-dcbm \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/lem-dcbm /var/lib/lem-dcbm/journal

# Broker and topic prefix, as the EVerest manager passes them; override with -e.
# The heartbeat is written by the running module and read by the HEALTHCHECK.
ENV PATH=/opt/lem-dcbm/.venv/bin:${PATH} \
    EV_MQTT_BROKER_HOST=mosquitto \
    EV_MQTT_BROKER_PORT=1883 \
    EV_MQTT_EVEREST_PREFIX=everest/ \
    LEM_DCBM_HEALTH_FILE=/tmp/lem-dcbm.health

# The transaction journal must outlive the container: set journal_dir to
# /var/lib/lem-dcbm/journal in the config and keep this volume.
VOLUME ["/var/lib/lem-dcbm"]
WORKDIR /var/lib/lem-dcbm
USER 10001:10001

# Healthy while the module's ready loop beats (once a second). The start period covers
# the meter's initial connection retries.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["lem-dcbm", "health", "--max-age", "10"]

ENTRYPOINT ["lem-dcbm", "run"]
CMD ["--config", "/config/config.yaml"]
