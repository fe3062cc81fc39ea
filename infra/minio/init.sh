#!/bin/sh
# Create the bucket (idempotent) and install its lifecycle rule: incomplete multipart uploads, left by a
# writer killed mid-upload, are aborted after a day so their parts stop costing storage.
set -eu
mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
mc mb --ignore-existing "local/$BUCKET"
mc ilm import "local/$BUCKET" < /lifecycle.json
mc ilm ls "local/$BUCKET"
