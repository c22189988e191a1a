"""The README's 10-line API example: train a Diffusion Forcing RNN on toy sequences, roll it out 8x."""
import torch
from dforce import NoiseSchedule, ModelConfig, build_model, ObjectiveConfig, diffusion_forcing_loss, SamplerConfig, sample
from dforce.data.synthetic import noisy_sines

data = noisy_sines(1024, 32)                                     # (N, T, D) = (1024, 32, 2)
schedule = NoiseSchedule(num_levels=100, objective="v")          # per-token Gaussian diffusion, level 0 = clean
model = build_model(ModelConfig(backbone="rnn", width=64), token_shape=(2,), num_levels=100)
opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
for step in range(500):                                          # Algorithm 1: every token gets its own level
    loss = diffusion_forcing_loss(model, schedule, data[torch.randint(0, 1024, (32,))], ObjectiveConfig()).loss
    opt.zero_grad(); loss.backward(); opt.step()
out = sample(model.eval(), schedule, SamplerConfig(steps=20, schedule="pyramid", window=16),
             context=data[:4, :8], length=256)                   # Algorithm 2: 8 real tokens -> 256 new ones
print(out.x.shape)                                               # torch.Size([4, 264, 2])
