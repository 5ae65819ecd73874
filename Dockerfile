# joulestream: one image for every service (api, gateway, worker, poll, the one-shot migrate/topics steps and
# the Dagster webserver + daemon). Multi-stage: the build stage installs the package — the same one the README
# installs, without the dev extras — into a virtualenv; the runtime stage copies only that virtualenv and runs
# as an unprivileged user (uid 10001; the directories named volumes mount on are created here, owned by it).
# No secret is baked in: every secret comes from the environment at run time (docker-compose.yml reads them
# from .env; docs/deployment.md). Checked by hadolint in `make test` (tests/deploy/test_compose.py).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# dependencies first (a layer that survives code changes), then the code
COPY pyproject.toml README.md ./
COPY core ./core
COPY controlplane ./controlplane
COPY providers ./providers
COPY warehouse ./warehouse
COPY pipelines ./pipelines
COPY streams ./streams
COPY api ./api
COPY orchestration ./orchestration
COPY cli ./cli
# the local package: its dependencies are pinned in pyproject.toml, so DL3013 (pin versions) does not apply
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[server]" \
    && python -m compileall -q /opt/venv/lib/python3.11/site-packages

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="joulestream" \
      org.opencontainers.image.description="Energy and carbon accounting for AI inference" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 joulestream \
    && useradd --system --uid 10001 --gid joulestream --home-dir /var/lib/joulestream --create-home \
       --shell /usr/sbin/nologin joulestream \
    && install -d -o joulestream -g joulestream -m 0700 /var/lib/joulestream/artifacts \
       /var/lib/joulestream/gateway/spool /var/lib/joulestream/dagster/compute_logs
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    JOULESTREAM_HOME=/var/lib/joulestream
WORKDIR /var/lib/joulestream
USER 10001:10001
EXPOSE 8787 8788 9100
ENTRYPOINT ["joulestream"]
CMD ["--help"]
