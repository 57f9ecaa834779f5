"""params.yaml is validated on load: one clear error per bad key, nothing silently ignored."""

from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from dermdl.params import Params, ParamsError, load_params, params_from_dict

ROOT = Path(__file__).resolve().parents[1]

BAD_CASES = [
    # (id, raw params, text the error must contain)
    ("unknown-top-key", {"trian": {"lr": 1}}, "trian: unknown key"),
    ("unknown-nested-key", {"train": {"learning_rate": 0.1}}, "train.learning_rate: unknown key"),
    ("retired-key", {"train": {"workers": 2}}, "train.workers: no longer used — batches are slices"),
    ("unknown-recipe", {"train": {"recipe": "fast"}}, "train.recipe: 'fast' is not allowed"),
    ("bad-constancy", {"preprocess": {"color_constancy": "grey"}}, "preprocess.color_constancy: 'grey' is not"),
    ("zoom-below-one", {"train": {"max_zoom": 0.5}}, "train.max_zoom: Input should be greater than or equal to 1"),
    ("lr-zero", {"train": {"lr": 0}}, "train.lr"),
    ("lr-negative", {"train": {"lr": -1e-3}}, "train.lr"),
    ("bs-zero", {"train": {"bs": 0}}, "train.bs"),
    ("bs-not-int", {"train": {"bs": "big"}}, "train.bs"),
    ("size-too-small", {"preprocess": {"size": 4}}, "preprocess.size"),
    ("input-size-too-small", {"train": {"input_size": 7}}, "train.input_size"),
    ("unknown-task", {"task": "regression"}, "task"),
    ("unknown-model", {"train": {"model": "efficientnet_lite9"}}, "train.model"),
    ("resize-policy", {"preprocess": {"resize": "stretch"}}, "preprocess.resize"),
    ("valid-size-one", {"train": {"valid_size": 1.0}}, "train.valid_size"),
    ("epochs-negative", {"train": {"epochs": -1}}, "train.epochs"),
    ("weights-file-missing", {"train": {"pretrained": "/nonexistent/weights.pth"}}, "train.pretrained"),
    ("no-test-set", {"data": {"sl_tests": []}}, "data.sl_tests"),
    ("section-not-mapping", {"train": 5}, "train"),
    ("test-set-also-trained-on", {"data": {"sl_train": ["a"], "sl_tests": ["a", "b"]}}, "never be trained on"),
    ("weak-labels-mode", {"train": {"weak_labels": "magic"}}, "train.weak_labels"),
]


@pytest.mark.parametrize("raw, expected", [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES])
def test_bad_params_name_the_key(raw, expected):
    with pytest.raises(ParamsError) as info:
        params_from_dict(raw)
    assert expected in str(info.value)


def test_all_problems_reported_together():
    with pytest.raises(ParamsError) as info:
        params_from_dict({"train": {"lr": -1, "bs": 0}, "bogus": 1})
    message = str(info.value)
    assert "3 invalid parameter(s)" in message
    for key in ("train.lr", "train.bs", "bogus"):
        assert key in message


def test_project_params_yaml_is_valid_and_explicit():
    params = load_params(ROOT / "params.yaml")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert params.task == "classification"
    # every section of the typed model is spelled out in the shipped file
    assert set(raw) == set(Params.model_fields)


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        sub = field.annotation
        nested = isinstance(sub, type) and issubclass(sub, BaseModel)
        keys += _keys(sub, f"{prefix}{name}.") if nested else [f"{prefix}{name}"]
    return keys


@pytest.mark.parametrize("key", _keys(Params))
def test_every_key_is_in_params_yaml(key):
    """`dvc exp run -S key=value` can only override keys the file has (README examples use many)."""
    node = yaml.safe_load((ROOT / "params.yaml").read_text())
    for part in key.split("."):
        assert isinstance(node, dict) and part in node, f"params.yaml lacks {key}"
        node = node[part]


def test_single_dataset_name_becomes_list():
    params = params_from_dict({"data": {"sl_tests": "external_test"}})
    assert params.data.sl_tests == ("external_test",)


def test_efficientnet_pytorch_alias_is_accepted():
    assert params_from_dict({"classification": {"model": "efficientnet-b0"}}).classification.model == "efficientnet-b0"


@pytest.mark.parametrize("task, section", [("classification", "classification"), ("segmentation", "segmentation")])
def test_keys_that_moved_to_a_task_section_still_work_with_a_note(task, section, capsys, monkeypatch):
    from dermdl import params as params_module

    monkeypatch.setattr(params_module, "_NOTED", set())  # the note is said once per process
    params = params_from_dict({"task": task, "train": {"model": "resnet18", "loss": "focal", "lr": 0.01}})
    assert getattr(params, section).model == "resnet18" == params.model and params.train.lr == 0.01
    assert params.classification.loss == "focal"
    note = capsys.readouterr().err
    assert f"train.model is now {section}.model" in note and "train.loss is now classification.loss" in note


def test_a_moved_key_and_its_new_spelling_together_are_refused():
    with pytest.raises(ParamsError, match="train.loss and classification.loss are both set"):
        params_from_dict({"train": {"loss": "ce"}, "classification": {"loss": "focal"}})


def test_errors_in_a_moved_key_name_the_key_the_user_wrote():
    with pytest.raises(ParamsError, match=r"classification\.model \(set as train\.model\)"):
        params_from_dict({"train": {"model": "efficientnet_lite9"}})


def test_training_tta_is_its_own_key():
    params = params_from_dict({"infer": {"tta": "none"}})
    assert params.tta == "none" and params.training_tta == "dihedral"
    assert params_from_dict({"train": {"tta": "flips"}}).training_tta == "flips"


def test_override_revalidates():
    params = params_from_dict({})
    assert params.override({"train.lr": 1e-4}).train.lr == 1e-4
    with pytest.raises(ParamsError, match="train.lr"):
        params.override({"train.lr": -1})


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ParamsError, match="mapping"):
        load_params(listy)
