"""LoRA+ (Hayou, Ghosh and Yu, 2024): the B matrices of LoRA learn `ratio` times
faster than the A matrices.

B starts at zero and A at random, so with one learning rate for both the
update is led by A while B is still tiny; a larger step for B is what the
paper derives for a stable, faster feature update. PEFT builds the optimizer
(`peft.optimizers.create_loraplus_optimizer`, the same one LLaMA-Factory's and
Axolotl's `loraplus_lr_ratio` use); here it replaces the Trainer's default
optimizer of the same class and settings (`optim`, weight decay, betas), and
the Trainer's scheduler then scales every group alike, so the ratio holds
through warmup and decay.
"""
from __future__ import annotations


def with_loraplus(trainer_class: type, ratio: float) -> type:
    """`trainer_class` whose optimizer gives LoRA B `ratio` x the learning rate
    of LoRA A; `trainer_class` itself when `ratio` is 0 (plain LoRA)."""
    if not ratio:
        return trainer_class

    class LoraPlusTrainer(trainer_class):
        loraplus_lr_ratio = ratio

        def create_optimizer(self, model=None):
            if self.optimizer is None:
                from peft.optimizers import create_loraplus_optimizer

                opt_model = self.model if model is None else model
                optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
                self.optimizer = create_loraplus_optimizer(
                    opt_model, optimizer_cls, loraplus_lr_ratio=self.loraplus_lr_ratio,
                    loraplus_weight_decay=self.args.weight_decay, **kwargs)
            return super().create_optimizer(model)  # keeps the optimizer set above

    LoraPlusTrainer.__name__ = f"LoraPlus{trainer_class.__name__}"
    return LoraPlusTrainer
