# The wardstream image the compose file's workers and simulator run (CPU only).
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
# torch pinned to the CPU build first: an unpinned install would pull the multi-GB CUDA one
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY stream ./stream
COPY processors ./processors
COPY device_sim ./device_sim
COPY wardmodels ./wardmodels
COPY wardstream ./wardstream
COPY dashboards ./dashboards
RUN pip install -e .  # editable: the committed weights under wardmodels/weights stay beside the code
RUN useradd --system --uid 10001 wardstream && mkdir -p /var/lib/wardstream /var/lib/wardstream-sim \
    && chown wardstream /var/lib/wardstream /var/lib/wardstream-sim
USER wardstream
CMD ["wardstream", "worker"]
