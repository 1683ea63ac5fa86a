"""The text modality: columns, tokenisation, the frozen encoder, selection methods, export, evaluation and the card.

A tiny BERT (built from a `BertConfig`, random weights) and a WordPiece tokenizer over a 40-word vocabulary are saved
to a temporary folder once and loaded by path, as a Hub id would be; the real all-MiniLM-L6-v2 and SST-2 in
`../shared` are used where present (skipped otherwise).
"""

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Value, load_dataset
from text_helpers import MINILM, SST2, make_text_dataset
from transformers import AutoTokenizer

from hf_distill import DistillTrainer
from hf_distill.cards import render_dataset_card
from hf_distill.methods import SelectionContext
from hf_distill.modalities import TextData, TextModality, resolve_modality
from hf_distill.modalities.text import linear_probe
from hf_distill.modalities.text_data import find_text_columns
from hf_distill.models import EmbeddingClassifier
from hf_distill.registry import get_method_class


def text_config(method: str, encoder: str, **overrides):
    settings = {"images_per_class": 3, "model_name_or_path": encoder, "max_length": 12, **overrides}
    return get_method_class(method).config_class(**settings)


# ---------------------------------------------------------------------------------------------------- columns, checks


def test_the_tiny_encoders_tokenizer_knows_every_word_of_the_sentences(tiny_encoder):
    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder)
    sentences = list(make_text_dataset()["train"]["text"])
    ids = tokenizer(sentences)["input_ids"]
    assert len(tokenizer) == 31 and tokenizer.unk_token_id not in {i for row in ids for i in row}


def test_a_string_column_resolves_to_the_text_modality():
    dataset = make_text_dataset()["train"]
    modality = resolve_modality("auto", dataset)
    assert isinstance(modality, TextModality)
    assert (modality.input_name, modality.input_column, modality.preview_column, modality.task) == (
        "inputs_embeds",
        "inputs_embeds",
        "text",
        "text-classification",
    )
    assert find_text_columns(dataset) == ("text", "label")


def test_text_columns_are_found_or_named_with_clear_errors():
    labels = ClassLabel(names=["a", "b"])
    two = Dataset.from_dict(
        {"title": ["x", "y"], "body": ["p", "q"], "label": [0, 1]},
        features=Features({"title": Value("string"), "body": Value("string"), "label": labels}),
    )
    with pytest.raises(ValueError, match="Several string columns .'title', 'body'.*text_column"):
        find_text_columns(two)
    assert find_text_columns(two, {"text": "body"}) == ("body", "label")
    with pytest.raises(ValueError, match="'label' given as the text column.*one string per row"):
        find_text_columns(two, {"text": "label"})
    numbers = Dataset.from_dict({"x": [0.5, 1.5], "label": [0, 1]})
    with pytest.raises(ValueError, match="Could not find a text column"):
        find_text_columns(numbers)


def test_missing_sentences_and_a_missing_encoder_are_clear_errors(tiny_encoder):
    splits = make_text_dataset()
    with pytest.raises(ValueError, match="set model_name_or_path"):
        DistillTrainer(text_config("random", None), splits["train"])
    nulls = Dataset.from_dict(
        {"text": ["good film", None, "bad", "dull"], "label": [1, 1, 0, 0]},
        features=Features({"text": Value("string"), "label": ClassLabel(names=["negative", "positive"])}),
    )
    with pytest.raises(ValueError, match="1 missing .null. values"):
        DistillTrainer(text_config("random", tiny_encoder, images_per_class=1), nulls)
    with pytest.raises(ValueError, match="needs at least images_per_class=20 rows per class"):
        DistillTrainer(text_config("random", tiny_encoder, images_per_class=20), splits["train"])


def test_methods_without_text_support_say_which_methods_have_it(tiny_encoder):
    with pytest.raises(
        ValueError, match="'dsa' does not support text data yet.*dc, dm, el2n, forgetting, grand, herding, k_center"
    ):
        DistillTrainer(text_config("dsa", tiny_encoder), make_text_dataset()["train"])


# ---------------------------------------------------------------------------------------------------- tensors


def test_prepared_text_is_token_ids_and_masks_with_the_sentences(tiny_encoder):
    modality = TextModality()
    modality.model_settings(tiny_encoder)
    dataset = make_text_dataset()["train"]
    data = modality.prepare(dataset, "text", "label", max_length=6)
    assert isinstance(data, TextData) and data.inputs.dtype == torch.long
    assert data.inputs.shape == (len(dataset), 6, 2) and data.example_shape == (6, 2)
    assert data.texts == list(dataset["text"]) and data.labels.tolist() == list(dataset["label"])
    ids = modality.tokenizer(data.texts[0], truncation=True, max_length=6)["input_ids"]
    assert data.inputs[0, : len(ids), 0].tolist() == ids and data.inputs[0, :, 1].sum() == len(ids)
    assert all(not p.requires_grad for p in modality.encoder.parameters())  # frozen


def test_learnable_inputs_are_word_embeddings_and_preview_back_to_the_tokens(tiny_encoder):
    modality = TextModality()
    modality.model_settings(tiny_encoder)
    data = modality.prepare(make_text_dataset()["train"], "text", "label", max_length=12)
    learned = modality.to_learnable(data.inputs[:4])
    table = modality.encoder.get_input_embeddings().weight
    assert learned.shape == (4, 12, 17) and learned.dtype == torch.float32
    assert torch.equal(learned[..., :-1], table[data.inputs[:4, :, 0]])
    assert torch.equal(learned[..., -1], data.inputs[:4, :, 1].float())
    assert modality.preview(learned) == [
        modality.tokenizer.decode(row, skip_special_tokens=True)
        for row in [data.inputs[i, : int(data.inputs[i, :, 1].sum()), 0].tolist() for i in range(4)]
    ]


def test_sentence_embeddings_do_not_depend_on_padding_or_batching(tiny_encoder):
    modality = TextModality()
    modality.model_settings(tiny_encoder)
    dataset = make_text_dataset()["train"]
    short = modality.prepare(dataset, "text", "label", max_length=12)
    long = modality.prepare(dataset, "text", "label", max_length=24)
    one_batch = modality.sentence_embeddings(short.inputs, batch_size=1000)
    torch.testing.assert_close(modality.sentence_embeddings(short.inputs, batch_size=5), one_batch)
    torch.testing.assert_close(modality.sentence_embeddings(long.inputs, batch_size=7), one_batch)
    # Token ids and their word embeddings (a learned example's form) embed identically.
    torch.testing.assert_close(modality.sentence_embeddings(modality.to_learnable(short.inputs)), one_batch)
    torch.testing.assert_close(one_batch.norm(dim=1), torch.ones(len(dataset)))


def test_learned_embeddings_get_gradients_through_the_frozen_encoder(tiny_encoder):
    modality = TextModality()
    modality.model_settings(tiny_encoder)
    data = modality.prepare(make_text_dataset()["train"], "text", "label", max_length=12)
    learned = modality.to_learnable(data.inputs[:3]).requires_grad_(True)
    modality.embed(learned).sum().backward()
    assert learned.grad[..., :-1].abs().sum() > 0
    assert learned.grad[..., -1].abs().sum() == 0  # the mask is not learned


# ---------------------------------------------------------------------------------------------------- evaluation


def test_the_linear_probe_is_scikit_learns_logistic_regression_at_its_optimum():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(40, 5, generator=generator)
    labels = (features[:, 0] + 0.5 * torch.randn(40, generator=generator) > 0).long()
    accuracy = linear_probe(features, labels, features, labels, num_classes=2)
    assert 0.8 <= accuracy <= 1.0
    # The optimum of C * sum(CE) + |W|^2 / 2 (bias free) has a zero gradient: C * X^T (P - Y) + W = 0, sum(P - Y) = 0.
    weight = torch.zeros(5, 2, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=1000, tolerance_grad=1e-10, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(features.double() @ weight + bias, labels, reduction="sum")
        loss = loss + 0.5 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    residual = (features.double() @ weight + bias).softmax(1) - torch.nn.functional.one_hot(labels, 2)
    torch.testing.assert_close(
        features.double().T @ residual + weight, torch.zeros(5, 2, dtype=torch.float64), atol=1e-5, rtol=0
    )
    # Soft targets equal to one-hot labels give the same classifier.
    soft = torch.nn.functional.one_hot(labels, 2).float()
    assert linear_probe(features, soft, features, labels, num_classes=2) == accuracy


# ---------------------------------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("method", ["random", "herding", "k_center"])
def test_selection_methods_distill_text_to_real_sentences(tiny_encoder, method, tmp_path):
    splits = make_text_dataset()
    config = text_config(method, tiny_encoder, output_dir=str(tmp_path / method), eval_random_baseline=True)
    trainer = DistillTrainer(config, splits["train"], splits["test"])
    trainer.train()
    distilled = trainer.to_dataset()
    assert distilled.column_names == ["text", "inputs_embeds", "attention_mask", "label"]
    assert trainer.distill_seconds > 0  # a coreset's cost is its selection
    assert distilled.num_rows == 6 and distilled["label"] == [0, 0, 0, 1, 1, 1]
    sentences = list(splits["train"]["text"])
    rows = trainer.selected_rows.tolist()
    assert list(distilled["text"]) == [sentences[row] for row in rows]  # verbatim, not the tokenizer's rendering
    assert [splits["train"]["label"][row] for row in rows] == distilled["label"]
    table = trainer.modality.encoder.get_input_embeddings().weight
    expected = table[trainer.train_data.inputs[rows][..., 0]]
    np.testing.assert_array_equal(np.asarray(distilled["inputs_embeds"], dtype=np.float32), expected.numpy())
    results = trainer.evaluate()
    assert results["distilled"]["protocol"] == "linear_probe" and 0 <= results["distilled"]["mean"] <= 100
    assert "improvement_over_random" in results["fair"]
    # The protocol is deterministic: the same set scores the same.
    assert trainer.evaluate()["distilled"]["mean"] == results["distilled"]["mean"]

    output_dir = trainer.save()
    assert not (output_dir / "synthetic_grid.png").exists()
    card = str(render_dataset_card(output_dir, "me/text-set"))
    assert "task_categories:\n- text-classification" in card and "selected real sentences" in card
    assert "inputs_embeds" in card and "synthetic_grid.png" not in card


@pytest.mark.parametrize("method", ["forgetting", "el2n", "grand"])
def test_scored_coresets_on_text_score_with_linear_heads_on_the_sentence_embeddings(tiny_encoder, method):
    splits = make_text_dataset()
    settings = {"selection_epochs": 2} if method != "grand" else {}
    if method != "forgetting":
        settings["num_score_models"] = 2
    trainer = DistillTrainer(text_config(method, tiny_encoder, **settings), splits["train"])
    context = SelectionContext(trainer.config, trainer.prepared)
    inputs, input_name = context.selection_inputs()
    assert input_name == "features" and torch.equal(inputs, trainer.modality.features(trainer.train_data))
    network = context.network(epochs=0, key="probe")
    assert isinstance(network, EmbeddingClassifier) and network.classifier.in_features == 16
    torch.testing.assert_close(context.features(network), inputs)  # the head sees the sentence embedding
    sentences = list(splits["train"]["text"])
    rows = trainer.selected_rows.tolist()
    assert trainer.to_dataset()["text"] == [sentences[row] for row in rows]
    assert [splits["train"]["label"][row] for row in rows] == [0, 0, 0, 1, 1, 1]
    # Seeded: the same selection again.
    assert torch.equal(DistillTrainer(trainer.config, splits["train"]).selected_rows, trainer.selected_rows)


def test_a_saved_text_set_loads_back_exactly(tiny_encoder, tmp_path):
    splits = make_text_dataset()
    config = text_config("herding", tiny_encoder, output_dir=str(tmp_path / "run"))
    trainer = DistillTrainer(config, splits["train"], splits["test"])
    trainer.train()
    output_dir = trainer.save()
    again = DistillTrainer(config, splits["train"], splits["test"])
    again.load_distilled(output_dir)
    torch.testing.assert_close(again.synthetic.images, trainer.synthetic.images, atol=0, rtol=0)
    assert again.evaluate()["distilled"]["mean"] == trainer.evaluate()["distilled"]["mean"]


def test_herding_keeps_the_sentences_nearest_the_class_mean_first(tiny_encoder):
    splits = make_text_dataset()
    trainer = DistillTrainer(text_config("herding", tiny_encoder, images_per_class=1), splits["train"])
    features = trainer.modality.features(trainer.train_data).double()
    for c, row in enumerate(trainer.selected_rows.tolist()):
        rows = trainer.train_data.indices_by_class()[c]
        nearest = rows[(features[rows] - features[rows].mean(0)).norm(dim=1).argmin()]
        assert row == int(nearest)


# ---------------------------------------------------------------------------------------------------- real data


@pytest.mark.skipif(not (MINILM.is_dir() and SST2.is_dir()), reason="../shared (all-MiniLM-L6-v2, SST-2) is absent")
def test_real_encoder_on_sst2_sentences_selects_and_evaluates(tmp_path):
    data = load_dataset(str(SST2))
    train = data["train"].select(range(120))
    test = data["validation"].select(range(60))
    config = text_config("k_center", str(MINILM), images_per_class=2, max_length=64)
    trainer = DistillTrainer(config, train, test)
    trainer.train()
    distilled = trainer.to_dataset()
    assert np.asarray(distilled["inputs_embeds"]).shape == (4, 64, 384)
    assert set(distilled["text"]) <= set(train["text"])
    # A real sentence's embeddings preview as the tokenizer's own decoding of it.
    previews = trainer.modality.preview(trainer.synthetic.images)
    tokenizer = trainer.modality.tokenizer
    decoded = [tokenizer.decode(tokenizer(t)["input_ids"], skip_special_tokens=True) for t in distilled["text"]]
    assert previews == decoded
    assert 0 <= trainer.evaluate()["distilled"]["mean"] <= 100


# ---------------------------------------------------------------------------------------------------- learned sets


def test_dm_on_text_matches_the_frozen_encoders_class_means(tiny_encoder, tmp_path):
    splits = make_text_dataset()
    config = text_config(
        "dm", tiny_encoder, images_per_class=1, num_iterations=30, lr_images=0.3, save_steps=0, logging_steps=1
    )
    trainer = DistillTrainer(config, splits["train"], splits["test"])
    modality, data = trainer.modality, trainer.train_data
    features = modality.features(data)
    class_means = torch.stack([features[rows].mean(0) for rows in data.indices_by_class()])
    initial = trainer.synthetic.images.detach().clone()

    def by_hand() -> float:
        with torch.no_grad():
            syn = modality.embed(trainer.synthetic.images).view(2, 1, -1).mean(dim=1)
        return float(((class_means - syn) ** 2).sum())

    start = by_hand()
    assert float(trainer.method.loss(trainer.synthetic, [0, 1], 0).detach()) == pytest.approx(start, rel=1e-5)
    trainer.train()
    assert by_hand() < 0.1 * start
    learned = trainer.synthetic.images.detach()
    assert not torch.equal(learned[..., :-1], initial[..., :-1])
    assert torch.equal(learned[..., -1], initial[..., -1])  # the attention mask is never learned
    distilled = trainer.to_dataset()
    assert all(isinstance(text, str) for text in distilled["text"])
    assert distilled["attention_mask"] == initial[..., -1].long().tolist()
    np.testing.assert_array_equal(np.asarray(distilled["inputs_embeds"], dtype=np.float32), learned[..., :-1].numpy())


def test_dm_options_that_need_drawn_networks_are_refused_on_text(tiny_encoder):
    config = text_config("dm", tiny_encoder, feature_layers=[0, 1])
    with pytest.raises(ValueError, match="feature_layers and network_pool_path need networks"):
        DistillTrainer(config, make_text_dataset()["train"])


def test_sentence_embeddings_are_cached_on_disk_and_read_back(tiny_encoder, tmp_path):
    splits = make_text_dataset()
    config = text_config("herding", tiny_encoder, feature_cache_dir=str(tmp_path / "cache"))
    first = DistillTrainer(config, splits["train"])
    cached = list((tmp_path / "cache").glob("sentence-features-*.safetensors"))
    assert len(cached) == 1
    second = DistillTrainer(config, splits["train"])
    assert second.train_data.sentence_features is not first.train_data.sentence_features
    torch.testing.assert_close(second.train_data.sentence_features, first.train_data.sentence_features, atol=0, rtol=0)
    assert torch.equal(second.selected_rows, first.selected_rows)
    # Other tokens (another max_length) are another entry.
    DistillTrainer(
        text_config("herding", tiny_encoder, feature_cache_dir=str(tmp_path / "cache"), max_length=8), splits["train"]
    )
    assert len(list((tmp_path / "cache").glob("sentence-features-*.safetensors"))) == 2


def test_protocol_b_fine_tunes_copies_of_the_encoder_with_a_fresh_head(tiny_encoder):
    splits = make_text_dataset()
    config = text_config(
        "random", tiny_encoder, eval_text_protocol="fine_tune", eval_num_models=2, eval_epochs=3, eval_lr=0.05
    )
    trainer = DistillTrainer(config, splits["train"], splits["test"])
    before = {name: p.detach().clone() for name, p in trainer.modality.encoder.named_parameters()}
    results = trainer.evaluate(random_baseline=False)
    distilled = results["distilled"]
    assert distilled["num_models"] == 2 and len(distilled["accuracies"]) == 2 and "protocol" not in distilled
    assert results["protocol"]["text_protocol"] == "fine_tune"
    # The modality's encoder (protocol (a)'s, and the one methods embed with) stays as it was, and frozen.
    for name, parameter in trainer.modality.encoder.named_parameters():
        assert torch.equal(parameter, before[name]) and not parameter.requires_grad
    # Seeded: the same figures again.
    assert trainer.evaluate(random_baseline=False)["distilled"]["accuracies"] == distilled["accuracies"]
    with pytest.raises(ValueError, match="eval_text_protocol must be 'linear_probe' or 'fine_tune'"):
        text_config("random", tiny_encoder, eval_text_protocol="finetune")


def test_the_fine_tuned_classifier_trains_the_encoder_copy_and_its_head(tiny_encoder):
    from hf_distill.evaluation import EvaluationProtocol, fresh_classifier, train_with_protocol
    from hf_distill.seeding import derive_generator

    splits = make_text_dataset()
    trainer = DistillTrainer(text_config("random", tiny_encoder), splits["train"])
    modality, data = trainer.modality, trainer.train_data
    classifier = fresh_classifier(trainer.model_config, derive_generator(0, "test"), modality)
    assert classifier.encoder is not modality.encoder and classifier.classifier.out_features == 2
    start = {name: p.detach().clone() for name, p in classifier.named_parameters()}
    protocol = EvaluationProtocol(epochs=2, lr=0.05, batch_size=8)
    train_with_protocol(
        classifier, data.inputs, data.labels, protocol, derive_generator(0, "train"),
        forward=lambda x: modality.logits(classifier, x),
    )  # fmt: skip
    changed = {name for name, p in classifier.named_parameters() if not torch.equal(p, start[name])}
    assert "classifier.weight" in changed and any(name.startswith("encoder.") for name in changed)


def test_the_command_line_distills_text_and_evaluates_it_with_either_protocol(tiny_encoder, tmp_path, capsys):
    import json

    from hf_distill.cli import main

    source = tmp_path / "sentences"
    make_text_dataset().save_to_disk(str(source))
    output_dir = tmp_path / "run"
    command = ["distill", "--dataset", str(source), "--method", "herding", "--images_per_class", "2"]
    command += ["--model_name_or_path", tiny_encoder, "--max_length", "12", "--output_dir", str(output_dir)]
    assert main(command) == 0
    recorded = json.loads((output_dir / "eval_results.json").read_text())
    assert recorded["distilled"]["architecture"] == "linear_probe" and "random_real" in recorded
    assert (
        main(["evaluate", str(output_dir), "--text_protocol", "fine_tune", "--num_models", "1", "--epochs", "2"]) == 0
    )
    fine_tuned = json.loads((output_dir / "eval_results_1models_2epochs_bert.json").read_text())
    assert fine_tuned["protocol"]["text_protocol"] == "fine_tune" and fine_tuned["distilled"]["num_models"] == 1
    assert json.loads((output_dir / "eval_results.json").read_text()) == recorded  # never replaced


def test_dc_on_text_matches_gradients_of_linear_heads_on_the_frozen_embedding(tiny_encoder):
    splits = make_text_dataset()
    settings = {"init": "real", "num_iterations": 2, "outer_loop": 2, "inner_loop": 1, "batch_real": 4}
    trainer = DistillTrainer(text_config("dc", tiny_encoder, **settings), splits["train"], splits["test"])
    method = trainer.method
    assert isinstance(method.network, EmbeddingClassifier) and method.network_input_name == "features"
    rows = torch.tensor([0, 5])
    torch.testing.assert_close(method.real_inputs(rows), trainer.modality.features(trainer.train_data)[rows])
    initial = trainer.synthetic.images.detach().clone()
    loss = method.loss(trainer.synthetic, [0, 1], 0)
    loss.backward()
    grad = trainer.synthetic.images.grad
    assert torch.isfinite(loss) and grad[..., :-1].abs().sum() > 0 and grad[..., -1].abs().sum() == 0
    trainer.synthetic.images.grad = None
    trainer.train()
    learned = trainer.synthetic.images.detach()
    assert not torch.equal(learned[..., :-1], initial[..., :-1]) and torch.equal(learned[..., -1], initial[..., -1])
    with pytest.raises(ValueError, match="init='noise' is for images"):
        DistillTrainer(text_config("dc", tiny_encoder), splits["train"])


def test_analyze_reports_token_lengths_and_uses_the_encoders_embedding(tiny_encoder, tmp_path):
    from hf_distill.analysis import AnalysisConfig, analyze_dataset

    duplicated = make_text_dataset()["train"]
    rows = list(range(len(duplicated))) + [0]  # row 0 twice: one near-duplicate pair
    config = AnalysisConfig(model_name_or_path=tiny_encoder, max_length=12)
    report = analyze_dataset(duplicated.select(rows), config, tmp_path / "analysis")
    assert report["num_rows"] == 25 and report["per_class"]["negative"]["rows"] == 13
    assert report["per_class"]["positive"]["tokens_mean"] > 2 and "pixel_mean" not in report["per_class"]["positive"]
    assert report["embedding"]["dim"] == 16 and report["embedding"]["network"].endswith("(pretrained, frozen)")
    assert report["near_duplicates"]["pairs"] >= 1 and [0, 24] in [
        pair["rows"] for pair in report["near_duplicates"]["listed"]
    ]
    assert (tmp_path / "analysis" / "analysis.png").is_file()


def test_the_full_data_baseline_reads_the_cached_embeddings_of_the_split(tiny_encoder, monkeypatch):
    splits = make_text_dataset()
    trainer = DistillTrainer(text_config("herding", tiny_encoder), splits["train"], splits["test"])
    expected = 100.0 * linear_probe(
        trainer.modality.features(trainer.train_data),
        trainer.train_data.labels,
        trainer.modality.features(trainer.test_data),
        trainer.test_data.labels,
        2,
    )
    encoded = []
    original = TextModality.sentence_embeddings
    monkeypatch.setattr(
        TextModality, "sentence_embeddings", lambda self, x, **kw: encoded.append(len(x)) or original(self, x, **kw)
    )
    results = trainer.evaluate(random_baseline=False, full_data=True)
    assert results["full_data"]["mean"] == pytest.approx(expected)
    assert encoded == [6]  # the set itself; the whole split (24 rows) came from its cached embeddings


def test_dc_on_text_learns_soft_labels_and_the_probe_trains_on_them(tiny_encoder):
    splits = make_text_dataset()
    settings = {"init": "real", "num_iterations": 3, "learn_soft_labels": True, "lr_labels": 5.0, "batch_real": 4}
    trainer = DistillTrainer(text_config("dc", tiny_encoder, **settings), splits["train"], splits["test"])
    before = trainer.synthetic.targets().detach().clone()
    trainer.train()
    after = trainer.synthetic.targets().detach()
    assert not torch.allclose(after, before)
    distilled = trainer.to_dataset()
    np.testing.assert_allclose(np.asarray(distilled["soft_label"]), after.numpy(), rtol=1e-6)
    expected = 100.0 * linear_probe(
        trainer.modality.sentence_embeddings(trainer.synthetic.images.detach()),
        after,
        trainer.modality.features(trainer.test_data),
        trainer.test_data.labels,
        2,
    )
    assert trainer.evaluate(random_baseline=False)["distilled"]["mean"] == pytest.approx(expected)


def test_a_text_set_is_pushed_and_loads_back_with_its_card(hub, tiny_encoder, tmp_path):
    from huggingface_hub import DatasetCard

    from hf_distill.hub import push_distilled_to_hub

    splits = make_text_dataset()
    trainer = DistillTrainer(text_config("dm", tiny_encoder, num_iterations=2), splits["train"], splits["test"])
    trainer.train()
    trainer.evaluate()
    run = trainer.save(tmp_path / "run")
    push_distilled_to_hub(run, "org/tiny-text")
    files = hub.files("org/tiny-text")
    assert {"README.md", "distill_config.json", "eval_results.json"} <= set(files)
    assert "synthetic_grid.png" not in files
    pushed = load_dataset("org/tiny-text", split="train").with_format("numpy")
    expected = trainer.to_dataset().with_format("numpy")
    np.testing.assert_array_equal(pushed["inputs_embeds"][:], expected["inputs_embeds"][:])
    np.testing.assert_array_equal(pushed["attention_mask"][:], expected["attention_mask"][:])
    assert list(pushed["text"]) == list(trainer.to_dataset()["text"])
    card = DatasetCard(files["README.md"].decode())
    assert card.data.task_categories == ["text-classification"] and "inputs_embeds" in card.text
