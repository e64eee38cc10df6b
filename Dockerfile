# syntax=docker/dockerfile:1
# omlmedia in a container: the wheel on Debian 12 slim with Python 3.11, run as a non-root user.
#   docker build -t omlmedia .
#   docker run --network host -v omlmedia-data:/var/lib/omlmedia omlmedia
# SIP and SDP carry addresses, so the container uses the host's network (docs/deploy.md); without
# --config the embedded demo runs (listening on 127.0.0.1). The healthcheck calls /api/v1/health.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- the wheel, built as a release is (sdist, then the wheel from it) ----------------------------
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
RUN pip install --no-cache-dir build==1.2.2
COPY . .
RUN python -m build --outdir /dist .

# -- the server ----------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
# libopus0: Opus on SIP legs (opuslib loads it). Unpinned on purpose: Debian stable's security
# updates must reach a rebuilt image.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libopus0 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 omlmedia \
    && useradd --system --uid 10001 --gid omlmedia --home-dir /var/lib/omlmedia \
        --shell /usr/sbin/nologin omlmedia \
    && install -d -o omlmedia -g omlmedia -m 0750 /var/lib/omlmedia
RUN --mount=type=bind,from=wheel,source=/dist,target=/dist \
    pip install --no-cache-dir /dist/omlmedia-*.whl
COPY contrib/docker/healthcheck.py /usr/local/lib/omlmedia/healthcheck.py

ENV PYTHONUNBUFFERED=1 \
    OMLMEDIA_HEALTH_URL=https://127.0.0.1:8443/api/v1/health
USER 10001:10001
WORKDIR /var/lib/omlmedia
VOLUME ["/var/lib/omlmedia"]
# SIP (UDP, TCP), SIP over TLS, HTTPS (pages, WebSocket, API); RTP uses server.rtp_port_range.
EXPOSE 5060/udp 5060/tcp 5061/tcp 8443/tcp
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/usr/local/lib/omlmedia/healthcheck.py"]
ENTRYPOINT ["omlmedia"]
CMD ["serve", "--data-dir", "/var/lib/omlmedia"]
