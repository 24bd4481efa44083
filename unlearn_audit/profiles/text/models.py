"""GPT-2-architecture sequence classifiers for the `text` profiles (transformers, imported lazily).

`GPT2Classifier` is a plain `nn.Module` whose `forward(input_ids)` returns class logits, so the
harness's training loop, the reference unlearners and the checks use it exactly like the image
models: `F.cross_entropy(model(x), y)`. It is a `transformers.GPT2Model` backbone and a linear
head on a pooled representation. Inputs are right-padded with `pad_token_id`, and padding is
masked out of attention and of the pooling.

Pooling: `"last"` reads the last non-padding token, as `GPT2ForSequenceClassification` does (the
standard head for a pretrained GPT-2); `"mean"` averages the non-padding tokens. The offline
profile uses `"mean"`: a small GPT-2 trained from scratch on a few thousand reviews learns much
faster with it (one trial on an earlier, harder version of the corpus, Adam lr 3e-3, 10 epochs:
73% test accuracy with the last-token head, 84% with the mean head; not a careful comparison),
while every token still passes through the same causal transformer.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from unlearn_audit.errors import MissingExtra

TEXT_EXTRA_HINT = "the text profiles need the optional 'transformers' package: pip install 'unlearn-audit[text]'"


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise MissingExtra(TEXT_EXTRA_HINT) from exc
    return transformers


class GPT2Classifier(nn.Module):
    """forward(input_ids: LongTensor N x L, right-padded) -> logits N x num_classes."""

    def __init__(self, backbone: nn.Module, num_classes: int, pad_token_id: int, pooling: str = "mean") -> None:
        super().__init__()
        if pooling not in ("mean", "last"):
            raise ValueError(f"pooling must be 'mean' or 'last', got {pooling!r}")
        self.transformer = backbone
        self.score = nn.Linear(int(cast(Any, backbone).config.n_embd), num_classes)
        self.pad_token_id = int(pad_token_id)
        self.pooling = pooling

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = input_ids != self.pad_token_id
        hidden = self.transformer(input_ids=input_ids, attention_mask=mask.long()).last_hidden_state
        if self.pooling == "mean":
            m = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)
        else:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            last = (positions * mask).argmax(1)  # rightmost non-padding token (0 for an all-padding row)
            pooled = hidden[torch.arange(len(hidden), device=hidden.device), last]
        return self.score(pooled)


def gpt2_small(
    input_shape: tuple[int, ...],
    num_classes: int,
    vocab_size: int = 256,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 4,
    dropout: float = 0.0,
    pad_token_id: int = 0,
    pooling: str = "mean",
) -> nn.Module:
    """A small GPT-2 configuration, randomly initialised: the offline `text` profile's model.

    Dropout defaults to 0 so that a build depends only on its seeds (the trainer does not seed
    torch's global generator, which dropout would draw from).
    """
    t = _transformers()
    config = t.GPT2Config(
        vocab_size=vocab_size,
        n_positions=int(input_shape[0]),
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        pad_token_id=pad_token_id,
        bos_token_id=None,
        eos_token_id=None,
    )
    return GPT2Classifier(t.GPT2Model(config), num_classes, pad_token_id, pooling)


def gpt2_pretrained(
    input_shape: tuple[int, ...], num_classes: int, name: str = "gpt2", dropout: float = 0.0, pooling: str = "last"
) -> nn.Module:
    """Pretrained GPT-2 weights (`name` on the Hugging Face Hub or in its cache) with a fresh linear head:
    the `text-gpt2-imdb` profile's model. Padding is the end-of-text token, as in `text_data.load_imdb`."""
    t = _transformers()
    from unlearn_audit.profiles.text.data import HF_HINT, TextResourceUnavailable

    try:
        backbone = t.GPT2Model.from_pretrained(name, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout)
    except Exception as exc:  # noqa: BLE001 - network, cache and hub errors all mean "not available here"
        raise TextResourceUnavailable(
            f"cannot load the pretrained weights {name!r} ({type(exc).__name__}: {exc}); {HF_HINT}"
        ) from exc
    if int(input_shape[0]) > backbone.config.n_positions:
        raise ValueError(f"sequence length {input_shape[0]} exceeds {name}'s {backbone.config.n_positions} positions")
    return GPT2Classifier(backbone, num_classes, backbone.config.eos_token_id, pooling)
