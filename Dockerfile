# hadr in a container: the scheduler daemon (`hadr schedule run`) with Prometheus metrics on 9187, plus the
# PostgreSQL tools it drives (pg_basebackup, pg_waldump, pg_ctl for drills) and redis-server for Redis
# restores and drills. Mount the policy at /etc/hadr/hadr.yaml and the key it names (read-only), e.g.
# policies/compose.yaml. Mirrors scripts/setup.sh. The image build itself is not tested here (no Docker
# engine on the build machines); its entrypoint command is (tests/integration/test_schedule_daemon.py).
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15 postgresql-client-15 redis-server redis-tools zstd util-linux \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/hadr
COPY pyproject.toml README.md ./
COPY hadr_backup ./hadr_backup
COPY policies ./policies
RUN pip install --no-cache-dir . \
 && useradd --system --uid 10001 --home /var/lib/hadr --create-home hadr \
 && mkdir -p /etc/hadr && chown hadr:hadr /var/lib/hadr
USER hadr
ENV HADR_POLICY=/etc/hadr/hadr.yaml
EXPOSE 9187
HEALTHCHECK --interval=30s --timeout=15s --start-period=30s --retries=3 \
  CMD ["hadr", "schedule", "health", "--metrics-port", "9187"]
ENTRYPOINT ["hadr"]
CMD ["schedule", "run", "--metrics-port", "9187"]
