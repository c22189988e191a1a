"""A trained model's samples match the data distribution better than an untrained one's (fixed seeds)."""

import torch

from dforce.data.sequences import WindowDataset
from dforce.data.synthetic import energy_distance, noisy_sines
from dforce.diffusion import NoiseSchedule
from dforce.engine.trainer import TrainConfig, train
from dforce.models import ModelConfig, build_model
from dforce.objective import ObjectiveConfig
from dforce.sampler import SamplerConfig, sample


def test_trained_samples_beat_untrained_by_a_margin(tmp_path):
    torch.manual_seed(0)
    sch = NoiseSchedule(num_levels=100, objective="v")
    data, held_out = noisy_sines(1024, 16, seed=0), noisy_sines(128, 16, seed=1)
    model = build_model(ModelConfig(width=48, depth=1), (2,), 100)
    cfg = SamplerConfig(steps=10, schedule="pyramid", window=16)

    def score(m):
        x = sample(m.eval(), sch, cfg, length=16, batch=128, token_shape=(2,), generator=torch.Generator().manual_seed(0)).x
        return energy_distance(x, held_out)

    untrained = score(model)
    res = train(model, sch, WindowDataset(data, 16), TrainConfig(steps=300, batch_size=32, lr=3e-3, warmup_steps=30,
                ema_decay=0.98, checkpoint_every=300, log_every=100), ObjectiveConfig(), run_dir=tmp_path, progress=False)
    trained = score(res.model)
    # untrained ≈ 0.8, trained ≈ 0.1 on this machine; the bar is a 2x improvement
    assert trained < 0.5 * untrained, (trained, untrained)
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "loss.png").exists()
