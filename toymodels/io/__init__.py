"""Run directories on disk: writing them safely (:mod:`.runs`) and reading them back as tidy tables
(:mod:`.load`)."""
