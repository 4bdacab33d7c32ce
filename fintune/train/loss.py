"""The causal-LM loss on the label positions only, for one-process CPU training.

TRL 1.14's default loss (``chunked_nll``) already skips the LM head on ignored
positions, but for its logs it also computes every token's entropy and
accuracy, and it recomputes each 256-token chunk in the backward pass. With
SmolLM2's 49,152-word vocabulary that was 28% of a CPU training step (profiled
at batch 8: exp, log-softmax, argmax and casts over the 256 x 49,152 chunks).
Here each chunk's loss and its gradient with respect to the hidden states are
computed together in the forward pass (as Liger's fused linear cross-entropy
does on GPUs), while the chunk's logits are still in cache; the backward pass
only scales the stored gradient. On 2 cores every pass over the logits is
memory-bound, so there are two: an fp32 log-softmax for the loss and a softmax
in the matmul's dtype for the gradient (one [N, V] log-softmax instead of
chunks was slower still). The loss equals the
cross-entropy transformers computes (tests/test_packing.py compares both and
their gradients). On a GPU, and under torchrun (whose DDP wrapper must see the
forward call), the trainer's own loss is kept: TRL's chunked_nll through PEFT
(trl 1.14.2 sft_config.py SFTConfig.__post_init__), and through Unsloth, which sets
SFT's loss_type to "nll" so its own fused cross-entropy runs (unsloth 2026.10.9
models/rl.py _pin_pristine_sft_loss_type and the sft_trainer replacements).
"""
from __future__ import annotations

from fintune.plan.lines import LOSS_CHUNK_ROWS as CHUNK  # rows of logits at a time (the plan counts them)


def _fused_ce():
    import torch

    class FusedLinearCrossEntropy(torch.autograd.Function):
        """sum over rows of cross_entropy(hidden @ weight.T, targets); weight frozen."""

        @staticmethod
        def forward(ctx, hidden, weight, targets):
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            grad = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
            for start in range(0, hidden.shape[0], CHUNK):
                h, t = hidden[start:start + CHUNK], targets[start:start + CHUNK]
                logits = h @ weight.T
                total -= torch.log_softmax(logits, dim=-1, dtype=torch.float32).gather(1, t[:, None]).sum()
                if grad is not None:  # d loss / d logits = softmax - one_hot, in the matmul's dtype
                    probs = torch.softmax(logits, dim=-1)
                    probs[torch.arange(len(t)), t] -= 1
                    grad[start:start + CHUNK] = probs @ weight.to(probs.dtype)
            ctx.save_for_backward(grad)
            return total

        @staticmethod
        def backward(ctx, grad_out):
            (grad,) = ctx.saved_tensors
            return grad * grad_out.to(grad.dtype), None, None

    return FusedLinearCrossEntropy


def label_positions_loss(model, inputs: dict, num_items_in_batch=None):
    """Mean (or sum / num_items_in_batch, for gradient accumulation) next-token
    cross-entropy over the positions whose label is not -100."""
    from peft import PeftModel

    causal_lm = model.get_base_model() if isinstance(model, PeftModel) else model
    head = causal_lm.get_output_embeddings()
    if head.weight.requires_grad or getattr(head, "bias", None) is not None:
        raise NotImplementedError("label_positions_loss needs a frozen LM head without bias")
    labels = inputs["labels"]
    body = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "position_ids")}
    hidden = causal_lm.base_model(**body, use_cache=False).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != -100
    total = _fused_ce().apply(hidden[:, :-1][keep], head.weight, targets[keep])
    denominator = num_items_in_batch if num_items_in_batch is not None else keep.sum().clamp(min=1)
    return total / denominator


def sft_trainer_class(lean_loss: bool):
    """TRL's SFTTrainer, with `label_positions_loss` when `lean_loss`."""
    from trl import SFTTrainer

    if not lean_loss:
        return SFTTrainer

    class LabelPositionsSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs.pop("_prediction_loss_only", None)
            if hasattr(num_items_in_batch, "to"):
                num_items_in_batch = num_items_in_batch.to(inputs["labels"].device)
            import torch

            # the decoder is called directly, past accelerate's autocast wrapper of model.forward
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(self.args.bf16)):
                loss = label_positions_loss(model, inputs, num_items_in_batch)
            return (loss, {"loss": loss}) if return_outputs else loss  # eval reads outputs as a dict

    return LabelPositionsSFTTrainer


def lora_inputs_uncast(model, enabled: bool):
    """PEFT casts each LoRA layer's input to the adapter's fp32 before its matmul;
    under bf16 autocast the matmul is cast back to bf16 anyway, so on a CPU
    that round trip is pure copying (+15% tokens/s without it, measured at
    batch 8). A context manager; a no-op when not `enabled`."""
    import contextlib

    if not enabled:
        return contextlib.nullcontext()
    from peft.helpers import disable_input_dtype_casting

    return disable_input_dtype_casting(model)
