"""Run directories on disk: opening one for writing, marked, with a manifest and a lock (:mod:`.rundir`);
writing its files atomically (:mod:`.files`); reading them back, checked (:mod:`.runs`, which also
re-exports the other two) or as tidy tables (:mod:`.load`); checkpoints for ``--resume``
(:mod:`.checkpoint`); the memory a run needs, estimated before compute (:mod:`.budget`)."""
