"""The fine-tuning lab: fine-tune one feature in the pretraining engine and watch the harmful ones.

:mod:`.plan` (which fine-tune is what), :mod:`.objective`, :mod:`.trainable`, :mod:`.probe`,
:mod:`.metrics` (the spill-over measures), :mod:`.progress` (matched gains, early stopping),
:mod:`.hooks` (what plug-ins may change), :mod:`.finetune` (the run), :mod:`.summary` (``summary.json``),
:mod:`.report` (the printed table), :mod:`.robustness` and :mod:`.suites` (tables across runs).
"""
