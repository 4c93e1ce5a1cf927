"""The core: data, models, geometry, planted features, penalties, the optimisers, the engine and
pretraining. Nothing here knows about fine-tuning (:mod:`toymodels.lab`) or defences."""
