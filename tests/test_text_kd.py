"""Knowledge distillation on a text set: the text teacher, the student, the saved folder and its card.

A text set lives in its encoder's input-embedding space, so the teacher and the student must read that space: these
tests check that they do (the same logits from a sentence's token ids and from its `inputs_embeds`), that a student
is saved as a plain `AutoModelForSequenceClassification` with the encoder's tokenizer, and that wrong students are
refused with the fix.
"""

import json
from pathlib import Path

import pytest
import torch
from text_helpers import make_text_dataset
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer, BertConfig

from hf_distill import DistillTrainer
from hf_distill.hub import push_student_to_hub
from hf_distill.kd import (
    KDConfig,
    KDDataCollator,
    KDTrainer,
    build_student,
    load_distilled_set,
    train_student,
    train_text_teacher,
)
from hf_distill.modalities import TextData, TextModality
from hf_distill.modalities.text_augment import SentenceSplice, TextAugmentation, TokenDropout
from hf_distill.models import MeanPoolingForSequenceClassification
from hf_distill.registry import get_method_class
from hf_distill.student_cards import render_student_card

MAX_LENGTH = 12
TINY_TEXT_KD = {"num_train_epochs": 3, "disable_tqdm": True, "logging_steps": 1, "learning_rate": 1e-3}


@pytest.fixture(scope="module")
def text_splits():
    return make_text_dataset()


@pytest.fixture
def text_set(tiny_encoder, text_splits, tmp_path) -> Path:
    """A `dm` text set whose recorded source is a `save_to_disk` copy of the splits."""
    source = tmp_path / "source"
    text_splits.save_to_disk(str(source))
    recorded = {"dataset": str(source), "config_name": None, "revision": None, "train_split": "train"}
    config = get_method_class("dm").config_class(
        images_per_class=2,
        model_name_or_path=tiny_encoder,
        max_length=MAX_LENGTH,
        num_iterations=3,
        eval_num_models=1,
        output_dir=str(tmp_path / "distilled"),
    )
    trainer = DistillTrainer(
        config, text_splits["train"], text_splits["test"], source={**recorded, "test_split": "test"}
    )
    trainer.train()
    return trainer.save()


def sentence_logits_both_ways(model, tokenizer, encoder_table: torch.Tensor, sentence: str):
    """The model's logits on a sentence from its token ids, and from its `inputs_embeds` in the encoder's table."""
    tokens = tokenizer([sentence], return_tensors="pt")
    with torch.no_grad():
        from_ids = model(**tokens).logits
        embeds = encoder_table[tokens["input_ids"]]
        from_embeds = model(inputs_embeds=embeds, attention_mask=tokens["attention_mask"]).logits
    return from_ids, from_embeds


def test_the_text_teacher_learns_with_the_word_embeddings_frozen_and_saves_its_tokenizer(
    tiny_encoder, text_splits, tmp_path
):
    teacher = train_text_teacher(
        text_splits["train"],
        text_splits["test"],
        encoder_name_or_path=tiny_encoder,
        max_length=MAX_LENGTH,
        epochs=8,
        batch_size=8,
        learning_rate=3e-3,
        show_progress=False,
        dataset_name="tiny",
        output_dir=tmp_path / "teacher",
    )
    record = teacher.config.hf_distill_teacher
    assert record["encoder"] == tiny_encoder and record["num_train_examples"] == len(text_splits["train"])
    encoder = TextModality()
    encoder.model_settings(tiny_encoder)
    table = encoder.encoder.get_input_embeddings().weight
    torch.testing.assert_close(teacher.get_input_embeddings().weight, table, rtol=0, atol=0)
    trained_layer = teacher.bert.encoder.layer[0].output.dense.weight
    assert not torch.equal(trained_layer, encoder.encoder.encoder.layer[0].output.dense.weight)
    test = TextModality.prepare(encoder, text_splits["test"], "text", "label", max_length=MAX_LENGTH)
    predictions = encoder.logits(teacher, test.inputs).argmax(-1)
    assert record["test_accuracy"] == pytest.approx(100.0 * (predictions == test.labels).double().mean().item())
    names = {path.name for path in (tmp_path / "teacher").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "teacher")
    assert loaded.config.id2label == {0: "negative", 1: "positive"}


def test_a_text_set_loads_with_its_encoder_and_prepares_real_sentences_like_it(text_set, text_splits):
    distilled = load_distilled_set(text_set)
    assert isinstance(distilled.modality, TextModality) and distilled.modality.encoder is not None
    assert distilled.preparation_settings() == {"max_length": MAX_LENGTH}
    inputs = distilled.inputs()
    assert inputs.shape == (4, MAX_LENGTH, 16 + 1) and inputs.dtype == torch.float32
    row = distilled.training_dataset(soft_labels=False)[0]
    torch.testing.assert_close(row["inputs_embeds"], inputs[0], rtol=0, atol=0)
    from hf_distill.kd import prepare_test_split

    test = prepare_test_split(distilled, text_splits["test"])
    assert isinstance(test, TextData) and test.inputs.dtype == torch.int64 and test.max_length == MAX_LENGTH


def test_the_collator_keeps_token_ids_as_integers_and_embeddings_as_floats():
    collate = KDDataCollator(TextModality())
    ids = collate([{"inputs_embeds": torch.ones(3, 2, dtype=torch.int64), "labels": 1}] * 2)
    embeds = collate([{"inputs_embeds": torch.ones(3, 5, dtype=torch.float64), "label": 0}] * 2)
    assert ids["inputs_embeds"].dtype == torch.int64 and embeds["inputs_embeds"].dtype == torch.float32
    assert ids["labels"].tolist() == [1, 1] and embeds["labels"].tolist() == [0, 0]


def test_the_default_text_student_is_the_encoder_with_a_mean_pooling_head_and_reads_ids_like_embeddings(text_set):
    distilled = load_distilled_set(text_set)
    student, base_model = build_student(KDConfig(output_dir="unused", disable_tqdm=True), distilled)
    assert isinstance(student, MeanPoolingForSequenceClassification) and base_model is None  # a local encoder
    assert student.config.num_labels == 2 and student.config.id2label == {0: "negative", 1: "positive"}
    modality = distilled.modality
    table = modality.encoder.get_input_embeddings().weight
    assert not student.get_input_embeddings().weight.requires_grad
    assert all(p.requires_grad for name, p in student.named_parameters() if "word_embeddings" not in name)
    # A copy: training the student leaves the modality's (frozen) encoder alone.
    assert student.encoder is not modality.encoder and not any(p.requires_grad for p in modality.encoder.parameters())
    student.eval()
    from_ids, from_embeds = sentence_logits_both_ways(student, modality.tokenizer, table, "the film was great")
    torch.testing.assert_close(from_ids, from_embeds)
    # The fresh head is keyed by the seed, whatever the global RNG did before.
    torch.manual_seed(123)
    again, _ = build_student(KDConfig(output_dir="unused", disable_tqdm=True), distilled)
    assert torch.equal(again.classifier.weight, student.classifier.weight)
    other, _ = build_student(KDConfig(output_dir="unused", disable_tqdm=True, seed=1), distilled)
    assert not torch.equal(other.classifier.weight, student.classifier.weight)


def test_a_text_student_from_a_checkpoint_is_that_checkpoints_sequence_classifier(text_set, tiny_encoder):
    distilled = load_distilled_set(text_set)
    config = KDConfig(output_dir="unused", student_name_or_path=tiny_encoder, disable_tqdm=True)
    student, _ = build_student(config, distilled)
    assert student.config.model_type == "bert" and student.config.num_labels == 2
    table = distilled.modality.encoder.get_input_embeddings().weight
    torch.testing.assert_close(student.get_input_embeddings().weight, table, rtol=0, atol=0)


def test_the_mean_pooling_classifier_saves_and_loads_with_the_auto_class(tiny_encoder, tmp_path):
    encoder = AutoModel.from_pretrained(tiny_encoder)
    model = MeanPoolingForSequenceClassification.from_encoder(encoder, id2label={0: "neg", 1: "pos"}).eval()
    model.save_pretrained(tmp_path / "model")
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model").eval()
    assert isinstance(loaded, MeanPoolingForSequenceClassification) and loaded.config.id2label == {0: "neg", 1: "pos"}
    ids = torch.tensor([[2, 6, 17, 3, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits
        torch.testing.assert_close(loaded(input_ids=ids, attention_mask=mask).logits, expected)
        # The pooled embedding is the sentence-transformers one: padding changes nothing.
        torch.testing.assert_close(model(input_ids=ids[:, :4], attention_mask=mask[:, :4]).logits, expected)
    output = model(input_ids=ids, attention_mask=mask, labels=torch.tensor([1]))
    assert output.loss is not None and output.loss.ndim == 0


def test_token_dropout_leaves_words_out_of_the_mask_only(tiny_encoder):
    dropout = TokenDropout(0.5)
    inputs = torch.randn(64, 10, 17)
    inputs[..., -1] = 1.0
    dropped = dropout(inputs, torch.Generator().manual_seed(0))
    torch.testing.assert_close(dropped[..., :-1], inputs[..., :-1], rtol=0, atol=0)
    assert torch.all(dropped[:, 0, -1] == 1)  # [CLS] stays
    assert 0.4 < 1 - dropped[:, 1:, -1].mean().item() < 0.6
    again = dropout(inputs, torch.Generator().manual_seed(0))
    assert torch.equal(again, dropped) and torch.equal(inputs[..., -1], torch.ones(64, 10))  # seeded, not in place
    tokens = torch.ones(4, 6, 2, dtype=torch.int64)
    assert dropout(tokens, torch.Generator().manual_seed(1))[..., 0].eq(1).all()  # ids untouched, mask channel 1
    modality = TextModality()
    augmentation = modality.augmentation("token_dropout", [])
    assert isinstance(augmentation, TextAugmentation) and [type(step) for step in augmentation.steps] == [TokenDropout]
    assert not modality.augmentation("auto", []).enabled
    with pytest.raises(ValueError, match="Text sets take the augmentations \\['splice', 'token_dropout'\\]"):
        modality.augmentation("color_crop", [])


def _token_examples(lengths: list[int], length: int = 8) -> torch.Tensor:
    """Token examples `(B, L, 2)` whose ids say where they came from: 100 * (row + 1) + position."""
    examples = torch.zeros(len(lengths), length, 2, dtype=torch.int64)
    for row, n in enumerate(lengths):
        examples[row, :n, 0] = 100 * (row + 1) + torch.arange(n)
        examples[row, :n, 1] = 1
    return examples


def test_splicing_joins_a_head_of_each_sentence_to_the_tail_of_another():
    lengths = [5, 3, 8, 2, 6]
    examples = _token_examples(lengths)
    spliced = SentenceSplice()(examples, torch.Generator().manual_seed(0))
    for row in range(len(lengths)):
        n = int(spliced[row, :, 1].sum())
        assert torch.equal(spliced[row, :n, 1], torch.ones(n, dtype=torch.int64)) and spliced[row, n:, 1].eq(0).all()
        ids = spliced[row, :n, 0].tolist()
        rows = [i // 100 - 1 for i in ids]
        positions = [i % 100 for i in ids]
        cut = rows.index(next(r for r in rows if r != row))  # where the partner's tail starts
        partner = rows[cut]
        # [CLS] and at least one more position of the sentence itself, then one run of the partner's positions
        # that ends with its last token ([SEP]), cut at the example length.
        assert cut >= 1 and positions[:cut] == list(range(cut)) and set(rows[cut:]) == {partner}
        assert positions[cut:] == list(range(positions[cut], positions[cut] + n - cut)) and positions[cut] >= 1
        assert positions[-1] == lengths[partner] - 1 or n == examples.shape[1]
    assert torch.equal(SentenceSplice()(examples, torch.Generator().manual_seed(0)), spliced)  # seeded
    assert torch.equal(SentenceSplice(0.0)(examples, torch.Generator().manual_seed(0)), examples)
    # Learned examples: the embeddings move with their tokens, the mask (last channel) follows the join.
    learned = torch.cat([examples[..., :1].float(), examples[..., 1:].float()], dim=-1)
    torch.testing.assert_close(SentenceSplice()(learned, torch.Generator().manual_seed(0)), spliced.float())


def test_text_strategies_join_with_a_plus_and_apply_in_order():
    augmentation = TextModality().augmentation("splice+token_dropout", [])
    assert [type(step) for step in augmentation.steps] == [SentenceSplice, TokenDropout]
    examples = _token_examples([6, 7, 5, 8])
    out = augmentation(examples, torch.Generator().manual_seed(3))
    generator = torch.Generator().manual_seed(3)
    expected = TokenDropout()(SentenceSplice()(examples, generator), generator)
    assert torch.equal(out, expected)
    with pytest.raises(ValueError, match="augmentation"):
        KDConfig(distilled_dataset="x", output_dir="y", augmentation="splice+flip")


def test_head_learning_rate_gives_the_head_its_own_rate(text_set, tmp_path):
    distilled = load_distilled_set(text_set)
    args = KDConfig(
        distilled_dataset=str(text_set),
        output_dir=str(tmp_path / "student"),
        alpha=1.0,
        optim="adamw_torch",
        optim_args=None,
        learning_rate=1e-5,
        head_learning_rate=1e-2,
        augmentation="token_dropout",
        disable_tqdm=True,
    )
    trainer = KDTrainer(args=args, distilled=distilled)
    optimizer = trainer.create_optimizer()
    body, head = optimizer.param_groups
    assert body["lr"] == 1e-5 and head["lr"] == 1e-2
    assert {id(p) for p in head["params"]} == {id(p) for p in trainer.model.classifier.parameters()}
    assert [type(step) for step in trainer.augment.steps] == [TokenDropout]
    assert json.loads(json.dumps(trainer.kd_config_dict()))["head_learning_rate"] == 1e-2


def test_a_fresh_text_student_gets_the_encoders_word_embeddings(text_set):
    distilled = load_distilled_set(text_set)
    smaller = {"model_type": "bert", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2}
    smaller |= {"intermediate_size": 8, "vocab_size": len(distilled.modality.tokenizer), "max_position_embeddings": 32}
    config = KDConfig(output_dir="unused", student_config=smaller, disable_tqdm=True)
    student, _ = build_student(config, distilled)
    table = distilled.modality.encoder.get_input_embeddings().weight
    torch.testing.assert_close(student.get_input_embeddings().weight, table, rtol=0, atol=0)
    assert student.config.intermediate_size == 8 and student.config.num_labels == 2
    again, _ = build_student(config, distilled)  # the init is keyed by the seed
    for a, b in zip(student.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_text_student_of_another_width_is_refused_with_the_fix(text_set):
    distilled = load_distilled_set(text_set)
    wide = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8).to_dict()
    with pytest.raises(ValueError, match="hidden size is 32 but the set's inputs_embeds have 16"):
        build_student(KDConfig(output_dir="unused", student_config=wide, disable_tqdm=True), distilled)


def test_train_student_on_a_text_set_trains_the_teacher_and_saves_a_plain_transformers_classifier(
    text_set, text_splits, tmp_path
):
    config = KDConfig(
        distilled_dataset=str(text_set), output_dir=str(tmp_path / "student"), train_teacher=True, **TINY_TEXT_KD
    )
    trainer = train_student(config)
    output_dir = Path(config.output_dir)
    names = {path.name for path in output_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "kd_config.json", "eval_results.json"} <= names
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in (output_dir / "teacher").iterdir()
    }
    kd = json.loads((output_dir / "kd_config.json").read_text())
    assert kd["modality"] == "text" and kd["num_distilled_images"] == 4
    assert kd["teacher"]["description"].endswith(
        "fine-tuned on the full " + kd["distilled_source"]["dataset"] + " train split"
    )
    assert trainer.teacher.config.hf_distill_teacher["epochs"] == 1  # the text default
    results = json.loads((output_dir / "eval_results.json").read_text())
    assert results["num_test_images"] == len(text_splits["test"]) and 0.0 <= results["accuracy"] <= 100.0

    # Without hf_distill: the student and its tokenizer classify raw sentences, as the evaluation did.
    student = AutoModelForSequenceClassification.from_pretrained(output_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    tokens = tokenizer(list(text_splits["test"]["text"]), padding=True, return_tensors="pt")
    with torch.no_grad():
        predictions = student(**tokens).logits.argmax(-1)
    accuracy = 100.0 * (predictions == torch.tensor(list(text_splits["test"]["label"]))).double().mean().item()
    assert accuracy == pytest.approx(results["accuracy"])

    card = render_student_card(output_dir, "user/tiny-text-student")
    assert card.data.pipeline_tag == "text-classification"
    assert "AutoModelForSequenceClassification" in card.text and "AutoTokenizer" in card.text
    assert "AutoImageProcessor" not in card.text and "text classifier" in card.text
    assert "import hf_distill" in card.text  # the default student is hf_distill's mean-pooling classifier
    assert "4 sentences, 2 per class" in card.text


def test_a_text_student_is_pushed_with_its_tokenizer_and_loads_from_the_hub(hub, text_set, tmp_path):
    config = KDConfig(distilled_dataset=str(text_set), output_dir=str(tmp_path / "student"), alpha=1.0, **TINY_TEXT_KD)
    trainer = train_student(config)
    push_student_to_hub(config.output_dir, "org/text-student")
    files = hub.files("org/text-student", repo_type="model")
    assert {"README.md", "config.json", "model.safetensors", "tokenizer.json", "kd_config.json"} <= set(files)
    tokenizer = AutoTokenizer.from_pretrained("org/text-student")
    student = AutoModelForSequenceClassification.from_pretrained("org/text-student").eval()
    local = trainer.accelerator.unwrap_model(trainer.model).eval()
    tokens = tokenizer(["the plot was dull", "a lovely film"], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(student(**tokens).logits, local(**tokens).logits)
    assert "pipeline_tag: text-classification" in files["README.md"].decode()


def test_kd_on_a_text_set_moves_the_student_towards_the_teachers_logits(text_set, tiny_encoder, tmp_path):
    # A decisive teacher: the encoder with a large random head (a fine-tuned one is measured in benchmarks/).
    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_encoder, num_labels=2)
    with torch.no_grad():
        teacher.classifier.weight.copy_(5.0 * torch.randn(2, 16, generator=torch.Generator().manual_seed(0)))
    distilled = load_distilled_set(text_set)
    settings = TINY_TEXT_KD | {"optim": "adamw_torch", "optim_args": None, "learning_rate": 1e-2, "weight_decay": 0.0}
    args = KDConfig(distilled_dataset=str(text_set), output_dir=str(tmp_path / "student"), alpha=0.0, **settings)
    trainer = KDTrainer(args=args, teacher=teacher, distilled=distilled)
    inputs = distilled.inputs()

    def gap() -> float:
        student = trainer.model.eval()
        with torch.no_grad():
            logits = distilled.modality.logits(student, inputs)
            return torch.nn.functional.kl_div(
                logits.log_softmax(-1), trainer.teacher_logits(inputs).log_softmax(-1), log_target=True
            ).item()

    before = gap()
    trainer.args.num_train_epochs = 60
    trainer.train()
    assert gap() < 0.2 * before
