# hadr in a container: the CLI plus the PostgreSQL client tools it drives (pg_basebackup, pg_waldump)
# and redis-cli. Run it beside the stack, e.g. `docker run -v /etc/hadr:/etc/hadr hadr schedule run`
# (the policy is /etc/hadr/hadr.yaml unless --policy or HADR_POLICY says otherwise). Mirrors scripts/setup.sh.
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15 postgresql-client-15 redis-tools zstd \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/hadr
COPY pyproject.toml README.md ./
COPY hadr_backup ./hadr_backup
COPY policies ./policies
RUN pip install --no-cache-dir .
ENTRYPOINT ["hadr"]
CMD ["--help"]
