"""Typed configs: presets load, dotted overrides parse, bad keys/values are rejected naming the key."""

from pathlib import Path

import pytest

from dforce.engine.config import apply_overrides, config_to_dict, from_dict, load_config, parse_override, presets
from dforce.recipes.sequence.config import RunConfig
from dforce.errors import ConfigError

CONFIGS = presets()["sequence_small"].parent  # dforce/recipes/sequence/presets


@pytest.mark.parametrize("name", ["sequence_small.yaml", "sequence_gpu.yaml"])
def test_presets_load_and_round_trip(name):
    cfg = load_config(RunConfig, CONFIGS / name)
    assert from_dict(RunConfig, config_to_dict(cfg)) == cfg


def test_overrides_are_typed_and_applied():
    cfg = load_config(RunConfig, CONFIGS / "sequence_small.yaml",
                      ["train.lr=3e-4", "model.width=256", "train.precision=bf16", "data.path=my.npz",
                       "model.max_context=null", "logging.tensorboard=true"])
    assert cfg.train.lr == pytest.approx(3e-4) and isinstance(cfg.train.lr, float)
    assert cfg.model.width == 256 and cfg.train.precision == "bf16" and cfg.data.path == "my.npz"
    assert cfg.model.max_context is None and cfg.logging.tensorboard is True
    assert cfg.train.steps == 2000  # untouched preset value


def test_partial_section_keeps_run_defaults():
    # sampler.steps alone must not reset stabilization_level to SamplerConfig's own default
    cfg = load_config(RunConfig, None, ["sampler.steps=7"])
    assert cfg.sampler.steps == 7 and cfg.sampler.stabilization_level == RunConfig().sampler.stabilization_level


def test_parse_override_forms():
    assert parse_override("a.b=1") == (["a", "b"], 1)
    assert parse_override("a=[1, 2]") == (["a"], [1, 2])
    assert parse_override("a=hello") == (["a"], "hello")
    for bad in ("novalue", "=3", "a..b=1", "1a=2"):
        with pytest.raises(ConfigError):
            parse_override(bad)


@pytest.mark.parametrize("override, key", [
    ("train.lrr=1", "train.lrr"),
    ("nosuch.x=1", "nosuch"),
    ("model.width=abc", "model.width"),
    ("model.width=1.5", "model.width"),
    ("train.steps=0", "train.steps"),
    ("train.precision=fp8", "train.precision"),
    ("logging.tensorboard=maybe", "logging.tensorboard"),
    ("device=gpu", "device"),
    ("data.val_fraction=1.5", "data.val_fraction"),
    ("sampler.window=999", "sampler.window"),
    ("train.lr=-1", "train.lr"),
])
def test_bad_overrides_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(RunConfig, CONFIGS / "sequence_small.yaml", [override])


def test_bad_yaml_key_names_key_and_file(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("train:\n  stepz: 3\n")
    with pytest.raises(ConfigError, match=r"train\.stepz.*x\.yaml"):
        load_config(RunConfig, p)
    p.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(RunConfig, p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(RunConfig, tmp_path / "missing.yaml")


def test_override_into_non_section_rejected():
    with pytest.raises(ConfigError, match="device"):
        apply_overrides({"device": "cpu"}, ["device.x=1"], RunConfig)


def test_resume_refuses_a_changed_method_or_model(tmp_path):
    """Resuming with another method/objective would silently train something else: a clear error instead;
    changing train.steps (the usual reason to resume) is allowed."""
    import torch

    from dforce.data.sequences import WindowDataset
    from dforce.diffusion import NoiseSchedule, NoiseScheduleConfig
    from dforce.engine.trainer import TrainConfig, train
    from dforce.models import ModelConfig, build_model
    from dforce.objective import ObjectiveConfig

    torch.manual_seed(0)
    data = WindowDataset([torch.randn(40, 2) for _ in range(4)], 8)
    schedule = NoiseSchedule(NoiseScheduleConfig(num_levels=10))

    def run(steps, conf, resume):
        model = build_model(ModelConfig(width=8, depth=1), (2,), 10)
        cfg = TrainConfig(steps=steps, batch_size=4, warmup_steps=1, checkpoint_every=1, log_every=1)
        return train(model, schedule, data, cfg, ObjectiveConfig(), run_dir=tmp_path, config_dict=conf,
                     resume=resume, progress=False)

    conf = {"method": "df", "model": {"width": 8}, "train": {"steps": 2}}
    run(2, conf, False)
    assert run(3, {**conf, "train": {"steps": 3}}, True).step == 3
    with pytest.raises(ConfigError, match="method"):
        run(4, {**conf, "method": "full_sequence"}, True)
    with pytest.raises(ConfigError, match="model.width"):
        run(4, {**conf, "model": {"width": 16}}, True)


def test_resume_accepts_keys_added_after_the_run_was_saved():
    """A run saved before a config key existed (e.g. model.causal, objective.clean_token_prob) still resumes; keys
    it recorded must match."""
    from dforce.engine.trainer import check_resume_config

    saved = {"model": {"width": 8}, "objective": {"weighting": "uniform"}}
    check_resume_config(saved, {"model": {"width": 8, "causal": True},
                                "objective": {"weighting": "uniform", "clean_token_prob": 0.0}}, "run")
    with pytest.raises(ConfigError, match="model.width"):
        check_resume_config(saved, {"model": {"width": 16, "causal": True}}, "run")


def test_resume_accepts_keys_removed_since_the_run_at_their_off_value():
    """A run saved with a key dforce has since removed (e.g. objective.shortcut_sorted: 0.0) still resumes; a
    removed key the run had switched on is a real difference."""
    from dforce.engine.trainer import check_resume_config

    check_resume_config({"objective": {"weighting": "uniform", "shortcut_sorted": 0.0}},
                        {"objective": {"weighting": "uniform"}}, "run")
    with pytest.raises(ConfigError, match="objective.shortcut_sorted"):
        check_resume_config({"objective": {"weighting": "uniform", "shortcut_sorted": 0.5}},
                            {"objective": {"weighting": "uniform"}}, "run")
