-- One server, one database per service (run once, when the data volume is created).
CREATE DATABASE mlflow;
CREATE DATABASE mlflow_auth;
CREATE DATABASE prefect;
