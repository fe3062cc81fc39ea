"""Prefect flows: orchestration only (DESIGN.md). Each flow module imports its tasks from ``tasks``.

- ``flows.training``: prepare -> fit -> validate -> test -> register; a subflow other pipelines call.
- ``flows.retraining``: the scheduled one, champion/challenger, never two at once.
- ``flows.reproduce``: run a past MLflow run again and compare.
- ``flows.predict``: batch scoring with the champion.
- ``flows.pipeline``: an example composed pipeline (upstream data step, training, scoring).
- ``flows.deploy``: serve (embedded) or deploy (work pool) them; ``flows.cli``: the console script;
  ``flows.embedded``: what the console script does without a Prefect server (the temporary API, telemetry).
"""
