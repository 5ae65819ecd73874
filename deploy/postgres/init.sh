#!/bin/sh
# First start of the postgres container: a second database for Dagster's storage, owned by the same user.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
CREATE DATABASE dagster OWNER "$POSTGRES_USER";
SQL
