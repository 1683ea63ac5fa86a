"""Tiny text data for the text tests: a BERT encoder with a WordPiece tokenizer over a 40-word vocabulary (saved to a
folder and loaded by path, as a Hub id would be) and two-class sentences built from that vocabulary."""

from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from transformers import BertConfig, BertModel, BertTokenizer

from hf_distill.seeding import seeded_rng

SHARED = Path(__file__).resolve().parents[2] / "shared"
MINILM = SHARED / "models" / "all-MiniLM-L6-v2"
SST2 = SHARED / "data" / "sst2"

POSITIVE = ["good", "great", "fine", "nice", "superb", "lovely"]
NEGATIVE = ["bad", "awful", "poor", "dull", "boring", "ugly"]
NEUTRAL = ["the", "film", "movie", "is", "was", "a", "plot", "story", "very", "quite", "and", "it"]


def save_tiny_encoder(folder: Path) -> str:
    """Writes a tiny BERT (random weights, seed 0) and its WordPiece tokenizer to `folder`; returns its path."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *POSITIVE, *NEGATIVE, *NEUTRAL, ",", "."]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # `vocab=`: transformers 5's tokenizer ignores the old `vocab_file=` keyword and would know only the special
    # tokens (every word [UNK]); the fixture's test below checks the words are known.
    tokenizer = BertTokenizer(vocab=str(folder / "vocab.txt"), do_lower_case=True)
    tokenizer.save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    with seeded_rng(0):
        BertModel(config).save_pretrained(folder)
    return str(folder)


def make_text_dataset(rows_per_class: int = 12, test_rows_per_class: int = 8, seed: int = 0) -> DatasetDict:
    """Two-class sentences: a few neutral words around one or two sentiment words of the class."""
    rng = np.random.default_rng(seed)
    features = Features({"text": Value("string"), "label": ClassLabel(names=["negative", "positive"])})

    def split(rows: int) -> Dataset:
        texts, labels = [], []
        for _ in range(rows):
            for label, words in enumerate((NEGATIVE, POSITIVE)):
                sentence = list(rng.choice(NEUTRAL, size=int(rng.integers(2, 7))))
                for word in rng.choice(words, size=int(rng.integers(1, 3))):
                    sentence.insert(int(rng.integers(0, len(sentence) + 1)), str(word))
                texts.append(" ".join(sentence))
                labels.append(label)
        return Dataset.from_dict({"text": texts, "label": labels}, features=features)

    return DatasetDict(train=split(rows_per_class), test=split(test_rows_per_class))
