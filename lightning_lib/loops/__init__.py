"""Lightning's ``loops`` module path. The loops themselves are functions over the run state (``lightning_lib.loop``);
what user code reads of them is on the Trainer (``trainer.fit_loop`` and its progress counters)."""
