"""The people in the cleaning loop: readers, their assignments, what they opened and saved.

* :mod:`.store` – the run's database (``<work_dir>/.vhi/readers.sqlite``): reader
  accounts (argon2 hashes), assignments and their history, claims (first opens), saves
  (with the SEG bytes kept content-addressed beside it) and pushes. Standard-library
  SQLite in WAL mode, so a workflow run and the cleaning station write at once.
* :mod:`.assign` – which reader(s) clean each session that is ready for cleaning:
  deterministic double reads, balanced by open work, never moved by itself.
* :mod:`.progress` – each assignment's state (to do, opened, saved), due date and
  overdue flag, the per-session reader columns of ``status.csv`` and the worklists.

This package's ``__init__`` imports nothing: :mod:`.store` sits below the sources (which
may record what they collect), the rest above the cohort plan.
"""
