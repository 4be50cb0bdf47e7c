# The runs a GPU session compares with the CPU (sourced by bench/cuda-carry.sh --refs, which makes the CPU side here,
# and bench/cuda-check.sh, which makes the GPU side there): the same commands, seed and data; only --device differs.
# The data is a 480-image subset of `dalle dataset emoji` (64 px, noto + twemoji: about 1.4 MB) in .device/emoji.
EMOJI_ARGS='--size 480 --resolution 64 --styles noto,twemoji'
DVAE_ARGS='--config configs/dvae-emoji.yaml --data .device/emoji/train --seed 0 --set train.steps=200 --set train.log_every=10 --set train.checkpoint_every=200 --set train.sample_every=200'
PRIOR_ARGS='--config configs/prior-emoji.yaml --data .device/emoji --seed 0 --set train.steps=200 --set train.log_every=10 --set train.val_every=100 --set train.val_batches=4 --set train.checkpoint_every=200 --set train.warmup_steps=50'
# generate: the bundled prior and dVAE, these captions, 2 samples each, one batch.
GENERATE_ARGS='-n 2 -b 8 --seed 0'
GENERATE_CAPTIONS='red apple
smiling face with sunglasses
blue car
cat face'
