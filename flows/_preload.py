"""Imported by ``serve``'s forkserver before it forks the runs (``flows.deploy.SERVE_PRELOAD``): what a
run's end of fit would import after its last step (the MLflow logger's own list), so forked runs start
with it."""

from lightning_lib.loggers.mlflow import warm_end_of_fit

warm_end_of_fit(log_model=True, curves=True, background=False)
