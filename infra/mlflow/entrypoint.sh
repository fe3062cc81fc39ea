#!/bin/sh
# Write the basic-auth config from the environment (never baked into the image; the admin password
# stays in MLFLOW_AUTH_ADMIN_PASSWORD, never in a file), then serve with
# artifacts proxied to MinIO: clients need no S3 credentials of their own to log artifacts.
set -eu
umask 077
cat > /tmp/basic_auth.ini <<INI
[mlflow]
default_permission = READ
database_uri = ${AUTH_DB_URI}
admin_username = ${MLFLOW_ADMIN_USERNAME}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
grant_default_workspace_access = false
INI
export MLFLOW_AUTH_CONFIG_PATH=/tmp/basic_auth.ini
exec mlflow server --host 0.0.0.0 --port 5000 --app-name basic-auth \
    --backend-store-uri "$BACKEND_STORE_URI" --artifacts-destination "$ARTIFACTS_DESTINATION"
