"""Few-step students (dforce.shortcut, dforce.distill, dforce.self_rollout): exact identities, errors, sampling."""

import dataclasses

import pytest
import torch

from dforce.diffusion import NoiseSchedule, sampling_levels
from dforce.distill import load_teacher
from dforce.engine import checkpoint as ckpt
from dforce.engine.trainer import TrainConfig, check_resume_config, train
from dforce.errors import ConfigError, ScheduleError
from dforce.models import ModelConfig, build_model
from dforce.objective import ObjectiveConfig, diffusion_forcing_loss
from dforce.sampler import SamplerConfig, sample
from dforce.scheduling import pyramid
from dforce.self_rollout import RolloutSpec
from dforce.shortcut import (StepConditioned, class_grids, ddim_x0_target, encode_levels, make_student, shortcut_loss,
                             step_class, step_conditioned, step_embedding, two_step_target)


def student_and_teacher(backbone="rnn", K=100, S_max=8, cond_dim=0):
    torch.manual_seed(0)
    teacher = build_model(ModelConfig(backbone=backbone, width=32, depth=2, heads=2), (3,), K, cond_dim)
    student = build_model(ModelConfig(backbone=backbone, width=32, depth=2, heads=2, shortcut_steps=S_max), (3,), K,
                          cond_dim)
    missing = student.load_state_dict(teacher.state_dict(), strict=False).missing_keys
    assert missing == ["level_emb.step_emb.weight"]  # the only parameter a student adds
    return student, teacher


@pytest.mark.parametrize("backbone", ["rnn", "transformer"])
def test_student_starts_as_its_teacher_at_every_step_class(backbone):
    student, teacher = student_and_teacher(backbone)
    x, k = torch.randn(4, 6, 3), torch.randint(0, 101, (4, 6))
    want = teacher(x, k)
    for j in range(4):  # S_max = 8: classes 0..3, zero step embedding = the teacher for each
        assert torch.equal(student(x, encode_levels(k, j, 100)), want)


@pytest.mark.parametrize("objective", ["eps", "x0", "v"])
def test_shortcut_loss_at_the_smallest_step_is_the_df_loss(objective):
    """Class 0 everywhere (d = the smallest step) is exactly Algorithm 1, draw for draw."""
    student, _ = student_and_teacher()
    with torch.no_grad():
        student.level_emb.step_emb.weight.normal_()  # a trained step embedding: class 0 must still be read alone
    sch = NoiseSchedule(num_levels=100, objective=objective)
    x0, mask = torch.randn(5, 7, 3), torch.ones(5, 7, dtype=torch.bool)
    mask[1, 5:] = False
    cfg = ObjectiveConfig(weighting="fused_snr")
    df = diffusion_forcing_loss(student, sch, x0, cfg, mask=mask, generator=torch.Generator().manual_seed(3))
    for fraction in (0.0, 0.5):  # fraction 0: the same random stream; 0.5 with every row forced to class 0
        c = dataclasses.replace(cfg, shortcut_fraction=fraction)
        kw = {} if fraction == 0 else {"classes": torch.zeros(5, dtype=torch.long)}
        sc = shortcut_loss(student, sch, x0, c, mask=mask, generator=torch.Generator().manual_seed(3), max_steps=8, **kw)
        torch.testing.assert_close(sc.loss, df.loss, rtol=0, atol=0)
        assert torch.equal(sc.levels, df.levels) and torch.equal(sc.weights, df.weights)


@pytest.mark.parametrize("objective", ["eps", "x0", "v"])
def test_ddim_x0_target_makes_one_step_land_on_the_target(objective):
    sch = NoiseSchedule(num_levels=100, objective=objective)
    x_t, x_s = torch.randn(3, 5, 2), torch.randn(3, 5, 2)
    k_t = torch.tensor([[100, 80, 50, 10, 0]]).expand(3, -1)
    k_s = torch.tensor([[50, 0, 49, 5, 0]]).expand(3, -1)
    x0 = ddim_x0_target(sch, x_t, k_t, k_s, x_s)
    pred = sch.target(x0, k_t, sch.eps_from_x0(x_t, k_t, x0))  # what the network would output
    x0h, eps = sch.to_x0_eps(x_t, k_t, pred)
    landed = sch.step(x_t, k_t, k_s, x0h, eps)
    # float32 round trip through the objective's space; the level-100 (almost pure noise) column is the worst
    torch.testing.assert_close(landed[:, :4], x_s[:, :4], rtol=1e-3, atol=1e-3)


def test_two_step_target_of_an_exact_denoiser_is_its_own_one_step_prediction():
    """For data that is a single point, the x0 predictor is exact at every level, so the two half steps and the
    one full step agree exactly: the consistency target equals the ordinary target."""
    sch = NoiseSchedule(num_levels=100, objective="v")
    point = torch.tensor([0.3, -0.7])

    def exact(x, k, c):  # v of the exact denoiser of a point mass at `point`
        x0 = point.expand_as(x)
        return sch.target(x0, k, sch.eps_from_x0(x, k, x0))

    x_t = torch.randn(4, 3, 2)
    k_t, k_mid, k_end = (torch.full((4, 3), v) for v in (80, 60, 40))
    got = two_step_target(exact, sch, x_t, k_t, k_mid, k_end, None)
    torch.testing.assert_close(got, exact(x_t, k_t, None), rtol=1e-4, atol=1e-4)


def test_class_grids_nest_and_match_sampling_levels():
    g = class_grids(8, 100)
    for j, S in enumerate((8, 4, 2, 1)):
        assert torch.equal(g[j, : S + 1], sampling_levels(S, 100))
        if j:  # step u of S steps is step 2u of 2S steps
            assert torch.equal(g[j - 1, : 2 * S + 1 : 2], g[j, : S + 1])


def test_step_classes_and_bad_step_counts():
    assert [step_class(S, 32) for S in (32, 16, 8, 4, 2, 1)] == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ConfigError, match="at most 32 steps"):
        step_class(64, 32)
    with pytest.raises(ConfigError, match="power of two"):
        step_class(3, 32)
    with pytest.raises(ConfigError, match="power of two"):
        ModelConfig(shortcut_steps=12)
    student, _ = student_and_teacher()
    sch = NoiseSchedule(num_levels=100, objective="v")
    for S in (3, 16):
        with pytest.raises(ConfigError, match=f"sampler.steps={S}"):
            sample(student.eval(), sch, SamplerConfig(steps=S, window=4), length=4, batch=2, token_shape=(3,))
    jumpy = torch.tensor([[2, 2], [0, 1], [0, 0]])  # token 0 moves two steps in row 0
    with pytest.raises(ScheduleError, match="one step per row"):
        sample(student.eval(), sch, SamplerConfig(steps=2, window=2), length=2, batch=2, token_shape=(3,), matrix=jumpy)


def test_sampler_feeds_the_student_its_step_class():
    """The rollout's model calls see level + j·(K+1) with j from the matrix's step count; the math uses raw levels."""
    student, teacher = student_and_teacher(S_max=8)
    seen = []
    student.level_emb.register_forward_hook(lambda m, args, out: seen.append(args[0].clone()))
    sch = NoiseSchedule(num_levels=100, objective="v")
    for S, j in ((8, 0), (2, 2), (1, 3)):
        seen.clear()
        cfg = SamplerConfig(steps=S, window=4, stabilization_level=2)
        out = sample(student.eval(), sch, cfg, length=4, batch=2, token_shape=(3,), context=torch.randn(2, 2, 3),
                     generator=torch.Generator().manual_seed(0))
        assert all(bool(((idx // 101) == j).all()) for idx in seen), S
        # a zero step embedding is the teacher: the same rollout from the same noise
        ref = sample(teacher.eval(), sch, cfg, length=4, batch=2, token_shape=(3,), context=out.x[:, :2],
                     generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(out.x, ref.x)
    shared = torch.zeros(1, 5, dtype=torch.long).expand(3, -1)  # stride 0 over the batch is kept (cheap tables)
    assert encode_levels(shared, 2, 100).stride(0) == 0
    assert isinstance(step_conditioned(student, 4, 100), StepConditioned)
    assert step_conditioned(teacher, 4, 100) is teacher


def test_transformer_student_samples_with_its_kv_cache():
    student, teacher = student_and_teacher("transformer", S_max=4)
    sch = NoiseSchedule(num_levels=100, objective="v")
    cfg = SamplerConfig(steps=1, window=3, stabilization_level=2)
    a = sample(student.eval(), sch, cfg, length=7, batch=2, token_shape=(3,), generator=torch.Generator().manual_seed(1))
    b = sample(teacher.eval(), sch, cfg, length=7, batch=2, token_shape=(3,), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a.x, b.x, rtol=1e-5, atol=1e-5)
    assert a.model_calls == b.model_calls


def test_distill_teacher_is_the_run_it_loads(tmp_path):
    student, teacher = student_and_teacher()
    ckpt.save_weights(teacher, tmp_path / "ema.safetensors")
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.1)  # the student has drifted: the teacher must not
    t = load_teacher(student, tmp_path)
    x, k = torch.randn(2, 4, 3), torch.randint(0, 101, (2, 4))
    assert torch.equal(t(x, k), teacher(x, k))
    assert not any(p.requires_grad for p in t.parameters())
    with pytest.raises(ConfigError, match="few-step student"):
        load_teacher(teacher, tmp_path)


def test_resume_accepts_keys_added_after_the_run_only_when_off():
    saved = {"model": {"width": 32}}
    check_resume_config(saved, {"model": {"width": 32, "shortcut_steps": 0}}, "run")
    with pytest.raises(ConfigError, match="model.shortcut_steps"):
        check_resume_config(saved, {"model": {"width": 32, "shortcut_steps": 8}}, "run")


def test_make_student_errors():
    with pytest.raises(ConfigError, match="exceeds the 4 noise levels"):
        build_model(ModelConfig(shortcut_steps=8), (2,), 4)
    student, _ = student_and_teacher()
    with pytest.raises(ConfigError, match="plain level embedding"):
        make_student(student, 8)
    assert step_embedding(student).num_classes == 4


def test_training_options_fail_clearly_where_they_do_not_apply():
    model = build_model(ModelConfig(width=16, depth=1), (2,), 10)
    sch = NoiseSchedule(num_levels=10, objective="v")
    data = torch.randn(16, 6, 2)
    from dforce.data.sequences import WindowDataset

    ds = WindowDataset(data, 6)
    with pytest.raises(ConfigError, match="few-step student"):
        train(model, sch, ds, TrainConfig(steps=1, distill_from="nowhere"), progress=False)
    with pytest.raises(ConfigError, match="samples during training"):
        train(model, sch, ds, TrainConfig(steps=1, self_rollout=0.5), progress=False)


@pytest.mark.parametrize("student", [False, True])
def test_self_rollout_training_runs_and_updates_the_model(student):
    torch.manual_seed(0)
    K = 20
    model = build_model(ModelConfig(width=16, depth=1, shortcut_steps=4 if student else 0), (2,), K, cond_dim=1)
    sch = NoiseSchedule(num_levels=K, objective="v")

    class DS:
        def __len__(self):
            return 8

        def get_batch(self, idx):
            g = torch.Generator().manual_seed(int(idx.sum()))
            return {"x": torch.randn(len(idx), 8, 2, generator=g), "cond": torch.randn(len(idx), 8, 1, generator=g)}

    before = [p.detach().clone() for p in model.parameters()]
    spec = RolloutSpec(SamplerConfig(steps=2, window=3, stabilization_level=1), context=2)
    cfg = TrainConfig(steps=3, batch_size=4, warmup_steps=1, self_rollout=0.5, ema_decay=0.0, checkpoint_every=3)
    res = train(model, sch, DS(), cfg, ObjectiveConfig(shortcut_fraction=0.5), progress=False, rollout=spec)
    assert res.step == 3 and all(torch.isfinite(torch.tensor(h["loss"])) for h in res.history)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_cli_trains_samples_and_refuses_bad_step_counts_of_a_student(tmp_path, capsys):
    """``dforce train`` makes a student from a DF run (--init-from), ``dforce sample/eval`` use it like any run, and a
    step count it was not trained for is one ``error:`` line with exit code 2."""
    from dforce import cli

    tiny = ["train.steps=6", "train.checkpoint_every=6", "train.warmup_steps=2", "train.batch_size=8",
            "data.synthetic_sequences=48", "data.window=8", "model.width=16", "sampler.window=8", "device=cpu"]
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    assert cli.main(["train", "sequence_small", *tiny, "--out", str(teacher), "--quiet"]) == 0
    assert cli.main(["train", "sequence_small", *tiny, "model.shortcut_steps=4", "sampler.steps=1",
                     "sampler.schedule=full_sequence", "--init-from", str(teacher), "--out", str(student),
                     "--quiet"]) == 0
    assert ckpt.load_yaml(student / "config.yaml")["model"]["shortcut_steps"] == 4  # the run says it is a student
    capsys.readouterr()
    assert cli.main(["sample", str(student), "--length", "12", "--num", "2", "--quiet"]) == 0
    for bad, why in (("3", "power of two"), ("8", "at most 4 steps")):
        capsys.readouterr()
        rc = cli.main(["sample", str(student), "--length", "4", "--num", "2", "--quiet", f"sampler.steps={bad}"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and err[0].startswith("error: sampler.steps=") and why in err[0], err
