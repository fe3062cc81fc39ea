"""The run behind a Trainer entry point: the fit, evaluation and predict loops over a small run state.

Internal to lightning_lib: the Trainer drives it; users and tasks/ read its results through the Trainer.
"""
