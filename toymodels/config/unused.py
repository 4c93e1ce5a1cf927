"""Options that the chosen optimiser or objective ignores: each must keep its default, or the run
would silently not do what the config says (``gamma`` under ``objective='importance'``, ``momentum``
under Adam). Checked by :class:`toymodels.config.run.Config` after its sections are built."""

from __future__ import annotations

from .checks import check_unused, default_of
from .schema import DECAYING_OPTIMIZERS, FineTuneConfig, OptimizerFields


def check_optimizer_fields(cfg: OptimizerFields, section: str) -> None:
    """weight_decay and momentum that the chosen optimiser ignores must stay at their defaults."""
    cls = type(cfg)
    if cfg.optimizer not in DECAYING_OPTIMIZERS:
        check_unused(f"{section}.weight_decay", cfg.weight_decay, default_of(cls, "weight_decay"),
                     f"is used only by {', '.join(DECAYING_OPTIMIZERS)}; {section}.optimizer="
                     f"{cfg.optimizer!r} ignores it")
    if cfg.optimizer != "momentum":
        check_unused(f"{section}.momentum", cfg.momentum, default_of(cls, "momentum"),
                     f"is used only by optimizer 'momentum'; {section}.optimizer={cfg.optimizer!r} ignores it")


def check_finetune(ft: FineTuneConfig) -> None:
    """Options that the chosen objective, trainable or optimiser axis ignores stay at their defaults."""
    def d(name):
        return default_of(FineTuneConfig, name)

    if ft.objective != "amplify":
        check_unused("finetune.gamma", ft.gamma, d("gamma"),
                     f"is the target's output scale of objective='amplify'; objective={ft.objective!r} ignores "
                     f"it (its strength is finetune.importance_factor)")
    if ft.objective != "importance":
        check_unused("finetune.importance_factor", ft.importance_factor, d("importance_factor"),
                     f"is the target's loss weight of objective='importance'; objective={ft.objective!r} "
                     f"ignores it (its strength is finetune.gamma)")
    if ft.trainable != "lora":
        check_unused("finetune.lora_rank", ft.lora_rank, d("lora_rank"),
                     f"is the rank of trainable='lora'; trainable={ft.trainable!r} ignores it")
    if ft.optimizers:
        for name in ("optimizer", "lr", "weight_decay", "momentum"):
            check_unused(f"finetune.{name}", getattr(ft, name), d(name),
                         f"is replaced by finetune.optimizers (each entry has its own {name})")
    else:
        check_optimizer_fields(ft, "finetune")
