# PostgreSQL 15 with pgtenant's optional C extension pgtenant_native
# (extension/), which `pgtenant migrate` installs into the catalog database:
# parents with many descendants then read at a leaf's speed. Built from the
# repository root (see compose.yaml).
FROM postgres:15
COPY extension /usr/src/pgtenant_native
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential postgresql-server-dev-15 \
    && make -C /usr/src/pgtenant_native install \
    && rm -rf /usr/src/pgtenant_native \
    && apt-get purge -y --auto-remove build-essential postgresql-server-dev-15 \
    && rm -rf /var/lib/apt/lists/*
