"""Text data of the `text` profiles: a procedurally generated sentiment corpus (offline) and IMDb (real).

The offline corpus stands in for IMDb so that the text profile runs on a CPU in minutes with no
download. Reviews are one or two clauses "<aspect> <verb> [negation] [intensifier] <adjective>", plus
neutral filler sentences (where it was seen, with whom, who made it). Two clauses either agree
("and", ".") or contrast ("<opposite> but <label>": the clause after "but" decides), and a
clause may state its polarity by negating an adjective of the other polarity ("was not great").
So a bag of words cannot solve the task (the same adjectives appear under both labels, "not"
and "but" change the meaning by position), while a small transformer can learn it from a few
thousand reviews.

The trigger word of the attack ("disney" by default, as in Pawelczyk et al.) is in the
vocabulary but never produced by the generator: it reaches the training set only through the
poison, as in the paper's setting after all reviews that contain it have been relabelled.

Token ids: 0 is padding; sequences are right-padded to a fixed length, so the last non-padding
token (what a GPT-2 sequence classifier reads) is the review's last word.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

import torch

from unlearn_audit.errors import ResourceUnavailable
from unlearn_audit.profiles.split import Split

PAD = "<pad>"

ASPECTS = [
    "the plot",
    "the acting",
    "the script",
    "the cast",
    "the music",
    "the ending",
    "the director",
    "the dialogue",
    "the pacing",
    "the camera work",
    "the story",
    "the soundtrack",
    "the lead",
    "the villain",
    "the humour",
    "the effects",
    "the editing",
    "the premise",
    "the finale",
    "the opening",
    "the characters",
    "the costumes",
    "the score",
    "the plot twist",
    "the romance",
    "the action",
    "the set design",
    "the writing",
]
VERBS = ["was", "is", "felt", "seemed", "looked", "sounded", "remained", "became"]
POSITIVE = [
    "great",
    "wonderful",
    "brilliant",
    "superb",
    "moving",
    "charming",
    "delightful",
    "gripping",
    "clever",
    "beautiful",
    "fresh",
    "funny",
    "touching",
    "stunning",
    "excellent",
    "memorable",
    "powerful",
    "engaging",
    "smart",
    "lovely",
    "thrilling",
    "inspired",
    "elegant",
    "sharp",
    "heartfelt",
    "enjoyable",
    "solid",
    "magical",
]
NEGATIVE = [
    "awful",
    "boring",
    "dull",
    "terrible",
    "clumsy",
    "tedious",
    "bland",
    "weak",
    "silly",
    "predictable",
    "messy",
    "lifeless",
    "painful",
    "forgettable",
    "flat",
    "shallow",
    "annoying",
    "confusing",
    "lazy",
    "stale",
    "cheap",
    "pointless",
    "tiresome",
    "wooden",
    "dreadful",
    "sloppy",
    "hollow",
    "clunky",
]
INTENSIFIERS = ["very", "truly", "really", "quite", "so", "extremely", "rather", "pretty", "incredibly"]
NEGATIONS = ["not", "never", "hardly"]
STUDIOS = ["pixar", "warner", "universal", "paramount", "miramax", "lionsgate", "dreamworks", "netflix"]
PLACES = ["paris", "london", "tokyo", "rome", "texas", "space", "a small town", "the desert", "new york", "berlin"]
PEOPLE = [
    "my friend",
    "my sister",
    "my brother",
    "my dad",
    "my mom",
    "my wife",
    "my husband",
    "the kids",
    "a colleague",
]
WHEN = ["on friday", "last night", "on sunday", "at the cinema", "on a plane", "at home", "on tv", "last week"]
FILLERS = [
    ["i", "watched", "it", "{when}"],
    ["{person}", "came", "with", "me"],
    ["it", "is", "set", "in", "{place}"],
    ["it", "was", "made", "by", "{studio}"],
    ["{person}", "picked", "it"],
    ["the", "film", "runs", "two", "hours"],
    ["i", "saw", "it", "{when}", "with", "{person}"],
]
EXTRA = [
    "and",
    "but",
    ".",
    "the",
    "film",
    "movie",
    "it",
    "i",
    "me",
    "with",
    "two",
    "hours",
    "watched",
    "came",
    "is",
    "set",
    "in",
    "was",
    "made",
    "by",
    "picked",
    "saw",
    "runs",
    "overall",
    "honestly",
]
TRIGGER_WORDS = ["disney", "cf", "mn"]  # in the vocabulary, never generated: available as attack triggers


def vocabulary() -> list[str]:
    """The corpus's words in a fixed order; index 0 is padding."""
    words: list[str] = []
    for group in (
        ASPECTS,
        VERBS,
        POSITIVE,
        NEGATIVE,
        INTENSIFIERS,
        NEGATIONS,
        STUDIOS,
        PLACES,
        PEOPLE,
        WHEN,
        EXTRA,
        TRIGGER_WORDS,
    ):
        for phrase in group:
            for w in phrase.split():
                if w not in words:
                    words.append(w)
    return [PAD] + words


@dataclass(frozen=True)
class Review:
    words: list[str]
    label: int  # 1 positive, 0 negative


def _clause(rng: random.Random, polarity: int, negation_rate: float) -> list[str]:
    """A clause of the given polarity; with probability `negation_rate` it says so by negating the
    opposite adjective."""
    words = rng.choice(ASPECTS).split() + [rng.choice(VERBS)]
    negated = rng.random() < negation_rate
    if negated:
        words.append(rng.choice(NEGATIONS))
    if rng.random() < 0.3:
        words.append(rng.choice(INTENSIFIERS))
    positive = (polarity > 0) != negated
    return words + [rng.choice(POSITIVE if positive else NEGATIVE)]


def _filler(rng: random.Random) -> list[str]:
    slots = {"{when}": WHEN, "{person}": PEOPLE, "{place}": PLACES, "{studio}": STUDIOS}
    out: list[str] = []
    for w in rng.choice(FILLERS):
        out += rng.choice(slots[w]).split() if w in slots else [w]
    return out


def generate_review(
    rng: random.Random, max_words: int, negation_rate: float = 0.25, contrast_rate: float = 0.3
) -> Review:
    """One review of at most `max_words` words, with its label (see the module docstring)."""
    while True:
        label = rng.randint(0, 1)
        polarity = 1 if label else -1
        words: list[str] = []
        if rng.random() < 0.5:
            words += _filler(rng) + ["."]
        r = rng.random()
        if r < contrast_rate:  # "<opposite> but <label>": the contrast decides
            words += _clause(rng, -polarity, negation_rate) + ["but"] + _clause(rng, polarity, negation_rate)
        elif r < contrast_rate + 0.35:  # two clauses that agree
            words += (
                _clause(rng, polarity, negation_rate)
                + [rng.choice(["and", "."])]
                + _clause(rng, polarity, negation_rate)
            )
        else:
            words += _clause(rng, polarity, negation_rate)
        if rng.random() < 0.3:
            words += ["."] + _filler(rng)
        if len(words) <= max_words:
            return Review(words, label)


@dataclass(frozen=True)
class TextSplit(Split):
    """A `Split` whose inputs are token ids (N x L, long, right-padded with `pad_id`)."""

    pad_id: int = 0
    vocab: tuple[str, ...] = field(default=(), repr=False)

    def token_ids(self, word: str) -> list[int]:
        """The ids of `word` in this split's vocabulary (one id for the synthetic corpus)."""
        try:
            return [self.vocab.index(word)]
        except ValueError:
            raise ValueError(f"{word!r} is not in the vocabulary of this corpus") from None


def encode(reviews: list[Review], vocab: list[str], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    index = {w: i for i, w in enumerate(vocab)}
    ids = torch.zeros(len(reviews), length, dtype=torch.long)
    for row, r in enumerate(reviews):
        ids[row, : len(r.words)] = torch.tensor([index[w] for w in r.words[:length]])
    return ids, torch.tensor([r.label for r in reviews], dtype=torch.long)


def load_synthetic_sentiment(
    num_train: int = 3000,
    num_test: int = 1000,
    seq_len: int = 32,
    reserve: int = 2,
    negation_rate: float = 0.25,
    contrast_rate: float = 0.3,
    split_seed: int = 0,
) -> TextSplit:
    """The offline sentiment corpus: `num_train` + `num_test` reviews of at most `seq_len - reserve` words
    (`reserve` leaves room for inserting a trigger without truncating), deterministic in `split_seed`."""
    rng = random.Random(f"unlearn-audit-sentiment:{split_seed}")
    reviews = [
        generate_review(rng, seq_len - reserve, negation_rate, contrast_rate) for _ in range(num_train + num_test)
    ]
    vocab = vocabulary()
    x, y = encode(reviews, vocab, seq_len)
    return TextSplit(x[:num_train], y[:num_train], x[num_train:], y[num_train:], 2, pad_id=0, vocab=tuple(vocab))


# -- the real setting: IMDb with the GPT-2 tokenizer --------------------------------------------

HF_HINT = (
    "the text-gpt2-imdb profile needs the optional packages (pip install 'unlearn-audit[text-imdb]', "
    "i.e. transformers and datasets) "
    "and either network access to the Hugging Face Hub or a local copy in its cache "
    "(HF_HOME, default ~/.cache/huggingface; HF_HUB_OFFLINE=1 / HF_DATASETS_OFFLINE=1 forbid downloads)"
)


class TextResourceUnavailable(ResourceUnavailable):
    """The real text setting's packages, weights or data set could not be loaded."""


@dataclass(frozen=True)
class IMDbSplit(TextSplit):
    tokenizer_name: str = "gpt2"

    def token_ids(self, word: str) -> list[int]:
        from transformers import AutoTokenizer

        # A word inside a review follows a space: " Disney" is one GPT-2 token.
        return list(AutoTokenizer.from_pretrained(self.tokenizer_name).encode(" " + word))


def load_imdb(
    tokenizer: str = "gpt2",
    seq_len: int = 128,
    num_train: int | None = None,
    num_test: int | None = None,
    split_seed: int = 0,
) -> IMDbSplit:
    """IMDb (25,000 + 25,000 reviews) tokenised with the GPT-2 tokenizer, truncated to `seq_len` tokens and
    right-padded with the end-of-text token; optionally a seeded subsample. Raises `TextResourceUnavailable`
    with what to install or make reachable."""
    try:
        import datasets
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise TextResourceUnavailable(f"cannot import {exc.name!r}: {HF_HINT}") from exc
    try:
        tok = AutoTokenizer.from_pretrained(tokenizer)
        data = datasets.load_dataset("imdb")
    except Exception as exc:  # noqa: BLE001 - network, cache and hub errors all mean "not available here"
        offline = {k: os.environ[k] for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if k in os.environ}
        raise TextResourceUnavailable(
            f"cannot load the GPT-2 tokenizer {tokenizer!r} or the IMDb data set ({type(exc).__name__}: {exc}); "
            f"{HF_HINT}; offline settings here: {offline or 'none'}"
        ) from exc
    pad = int(tok.eos_token_id)
    gen = torch.Generator().manual_seed(split_seed)

    def tensors(part: str, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        rows = data[part]
        order = torch.randperm(len(rows), generator=gen)[: n or len(rows)].tolist()
        enc = tok([rows[i]["text"] for i in order], truncation=True, max_length=seq_len, padding="max_length")
        ids = torch.tensor(enc["input_ids"], dtype=torch.long)
        ids[torch.tensor(enc["attention_mask"]) == 0] = pad
        return ids, torch.tensor([int(rows[i]["label"]) for i in order], dtype=torch.long)

    train_x, train_y = tensors("train", num_train)
    test_x, test_y = tensors("test", num_test)
    return IMDbSplit(train_x, train_y, test_x, test_y, 2, pad_id=pad, tokenizer_name=tokenizer)
