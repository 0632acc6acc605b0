"""One dataclass per stage. The defaults are the course configuration a student runs;
`smoke()` gives a tiny variant that exists only so unit tests finish in seconds.

Later stages (SFT, reward model, PPO) add their own dataclasses here.
"""

from __future__ import annotations

from dataclasses import dataclass

SPECIAL_TOKENS = ("<|endoftext|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>")


@dataclass
class TokenizerConfig:
    # Total vocabulary incl. the 256 byte symbols and the special tokens. The world's
    # vocabulary is small, so 2048 covers whole words without wasting embedding rows.
    vocab_size: int = 2048
    # A merge must occur at least this often in the corpus to be learned.
    min_frequency: int = 2
    # In this order they get ids 0, 1, 2, ...: <|endoftext|> is bos, eos and the document
    # separator; <|pad|> pads batches; role tags and <|end|> (end of a chat turn) are
    # used by the chat template.
    special_tokens: tuple[str, ...] = SPECIAL_TOKENS

    @classmethod
    def smoke(cls) -> TokenizerConfig:
        return cls(vocab_size=320)


@dataclass
class ModelConfig:
    # The policy every stage starts from: the shipped pretrained model (reproduce it
    # with `python -m rlhf_lab pretrain`), or any Hugging Face causal LM name or local
    # folder, e.g. "gpt2" or "HuggingFaceTB/SmolLM2-135M-Instruct". The one value an
    # instructor changes to take the course to a real model.
    base_model: str = "data/base-model"
    # The GPT-2 architecture used when a model is trained from scratch (ignored when a
    # checkpoint is loaded). About 2.2M parameters with the default tokenizer.
    n_embd: int = 192  # width of the residual stream
    n_layer: int = 4  # transformer blocks
    n_head: int = 4  # attention heads per block (n_embd must be divisible by it)
    n_positions: int = 256  # context length in tokens (prompt + response)
    # Dropout on residual, embedding and attention; 0 for pretraining (one pass over a
    # large corpus does not overfit). InstructGPT used 0.2 residual dropout for SFT.
    dropout: float = 0.0

    @classmethod
    def smoke(cls) -> ModelConfig:
        return cls(n_embd=32, n_layer=1, n_head=2, n_positions=64)

    @classmethod
    def large(cls) -> ModelConfig:
        """The larger base model (about 8M parameters, 3.7x), our stand-in for 175B GPT-3 in notebook 07."""
        return cls(base_model="data/base-model-large", n_embd=320, n_layer=6, n_head=5)


@dataclass
class PretrainConfig:
    seed: int = 0  # seeds initialization, data order and dropout
    block_size: int = 256  # tokens per training sequence (<= ModelConfig.n_positions)
    batch_size: int = 16  # sequences per optimizer step
    lr: float = 1e-3  # peak learning rate (small models tolerate a high one)
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * min_lr_ratio
    warmup_steps: int = 100  # linear warmup from ~0 to lr
    weight_decay: float = 0.1  # AdamW decay, applied to matrices only (not biases/norms)
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW moments, as in GPT-3
    grad_clip: float = 1.0  # clip the global gradient norm to this
    epochs: int = 4  # passes over the packed training corpus
    max_steps: int | None = None  # stop earlier after this many steps (None: all epochs)
    eval_every: int = 100  # steps between validation evaluations (and history entries)
    eval_blocks: int = 64  # validation blocks per periodic evaluation (always the same ones)

    @classmethod
    def smoke(cls) -> PretrainConfig:
        return cls(block_size=32, batch_size=4, warmup_steps=2, max_steps=6, eval_every=3, eval_blocks=4)



@dataclass
class SFTConfig:
    seed: int = 0  # seeds data order, dropout and the sampled answers that are scored
    epochs: int = 8  # the paper trains 16; eight fit a CPU-minute budget (the best epoch is kept; the score still rose at 7)
    batch_size: int = 32  # demonstrations per optimizer step (bucketed by length: little padding)
    lr: float = 1e-3  # peak learning rate, then cosine decay to 0 (the paper: cosine decay)
    warmup_steps: int = 20  # linear warmup steps
    weight_decay: float = 0.0  # AdamW weight decay
    grad_clip: float = 1.0  # clip the global gradient norm to this
    dropout: float = 0.2  # the paper's 0.2, on every GPT-2 dropout (see set_dropout); off again for sampling
    max_length: int = 192  # longest prompt + answer in tokens; longer demonstrations are an error
    n_train: int | None = None  # use only the first n demonstrations (None: all)
    mask_prompt: bool = True  # loss on the answer only; False also trains on the prompt tokens
    n_score: int = 96  # validation prompts whose sampled answers are scored each epoch
    max_new_tokens: int = 64  # answer length limit when scoring
    temperature: float = 0.7  # sampling temperature when scoring

    @classmethod
    def smoke(cls) -> SFTConfig:
        return cls(epochs=2, batch_size=4, warmup_steps=1, n_train=8, n_score=4, max_new_tokens=8)


@dataclass
class ComparisonsConfig:
    seed: int = 0  # seeds the sampled answers, the panel's members and who ranks what
    n_train: int = 600  # training prompts (the last ones of the split) ranked by one labeler each
    n_valid: int = 120  # validation prompts ranked by two labelers each: the RM's held-out set
    k_range: tuple[int, int] = (4, 9)  # answers per prompt, drawn uniformly (the paper's K)
    # A prompt's K answers cycle through these temperatures, so each ranking spans careful and
    # careless answers (the paper's spanned several models); recorded with the answers.
    temperatures: tuple[float, ...] = (0.7, 1.0, 1.3)
    top_p: float = 0.9
    calibration_prompts: int = 400  # prompts the panel noise is calibrated on (the rest measure agreement)

    @classmethod
    def smoke(cls) -> ComparisonsConfig:
        return cls(n_train=12, n_valid=6, k_range=(2, 4), calibration_prompts=6)


@dataclass
class RewardConfig:
    seed: int = 0  # seeds the head-free start, batch order
    epochs: int = 1  # passes over the rankings, as the paper (a second made ours over-confident: log loss 0.65 -> 0.70)
    groups_per_batch: int = 4  # rankings per step; each is K answers forwarded once, C(K,2) pairs
    pairs_per_batch: int = 16  # pairs per step on shuffled pairs (about as many answers as 4 rankings)
    lr: float = 1e-4  # peak learning rate, cosine decay to 0 (3e-4 and 1e-3: within 2 points either way on seeds 0-2)
    head_lr_scale: float = 30.0  # the fresh scalar head learns this much faster than the SFT body
    warmup_steps: int = 10  # linear warmup steps
    weight_decay: float = 0.0  # AdamW weight decay
    grad_clip: float = 1.0  # clip the global gradient norm to this
    max_length: int = 256  # longest prompt + answer in tokens
    evals_per_epoch: int = 4  # validation log loss / accuracy points per epoch
    n_normalize: int = 300  # training demonstrations whose mean score is shifted to 0
    max_rankings: int | None = None  # train on the first n rankings only (None: all)

    @classmethod
    def smoke(cls) -> RewardConfig:
        return cls(epochs=1, groups_per_batch=2, pairs_per_batch=4, warmup_steps=1, evals_per_epoch=1, n_normalize=4,
                   max_rankings=4)


@dataclass
class PPOConfig:
    seed: int = 0  # seeds prompt order, sampling, minibatches
    steps: int = 30  # rounds of (rollout, PPO update); 40 moved gold no further (0.760 vs 0.754, same win rate)
    batch_size: int = 32  # prompts per rollout
    minibatch_size: int = 16  # rollouts per gradient step
    # Passes over each rollout batch. The update was most of a step's time: one pass at 8e-5 does
    # what two at 4e-5 did (win rate 53.4% vs 54.2%, gold 0.760 vs 0.759, all refusals kept) at 0.7x the time.
    ppo_epochs: int = 1
    lr: float = 8e-5  # policy learning rate (constant)
    value_lr: float = 1e-4  # value model learning rate
    kl_coef: float = 0.15  # β: per-token penalty β·log(π/π_SFT) in the reward (0.05 lost to SFT here)
    target_kl: float | None = None  # if set, adapt β so the rollout KL (per answer) tracks this
    kl_horizon: int = 400  # adaptive β: how fast it moves (Ziegler et al., 2019)
    gamma: float = 1.0  # discount (one answer is one short episode)
    lam: float = 0.95  # GAE λ
    clip: float = 0.2  # ε of the clipped surrogate
    value_clip: float = 0.2  # how far a value may move per update
    whiten_advantages: bool = True  # advantages to mean 0, std 1 per batch
    normalize_rewards: bool = False  # divide RM scores by their running std
    max_new_tokens: int = 48  # answer length limit
    temperature: float = 1.0  # sampling temperature, also used for every log-prob (KL, ratio)
    missing_eos_penalty: float | None = 1.0  # subtracted from the RM score of answers cut off unfinished
    grad_clip: float = 1.0  # clip each model's gradient norm to this
    ptx_coef: float = 0.0  # γ of PPO-ptx: weight of the pretraining log-likelihood (0: plain PPO)
    ptx_batch_size: int = 8  # corpus blocks per gradient step when ptx_coef > 0
    ptx_block_size: int = 128  # tokens per corpus block

    @classmethod
    def smoke(cls) -> PPOConfig:
        return cls(steps=2, batch_size=4, minibatch_size=2, ppo_epochs=1, max_new_tokens=8, ptx_batch_size=2,
                   ptx_block_size=16)


@dataclass
class RLOOConfig(PPOConfig):
    """PPO's knobs (β, lr, batch, answer length) with k answers per prompt and no value model."""

    samples_per_prompt: int = 4  # k: each answer is judged against the mean of the prompt's other k − 1
    ppo_epochs: int = 1  # on-policy REINFORCE: one pass; the clip only guards the second minibatch
    # Slower and longer than PPO: 8 prompts a step, not 32. At PPO's 8e-5 for 30 steps RLOO won 52.2% against
    # SFT and kept 14 of 17 refusals; at 4e-5 for 40 steps, 56.6% and 17 of 17 (one run each, seed 0).
    lr: float = 4e-5
    steps: int = 40

    @classmethod
    def smoke(cls) -> RLOOConfig:
        return cls(steps=2, batch_size=4, minibatch_size=2, samples_per_prompt=2, max_new_tokens=8)


@dataclass
class DPOConfig:
    seed: int = 0  # seeds batch order
    beta: float = 0.1  # β: the implicit reward is β·log(π/π_SFT); larger keeps the policy nearer SFT
    epochs: int = 1  # passes over the rankings
    groups_per_batch: int = 4  # rankings per step, each K answers forwarded once (as the RM)
    lr: float = 1e-4  # peak learning rate, cosine decay to 0
    warmup_steps: int = 10  # linear warmup steps
    grad_clip: float = 1.0  # clip the global gradient norm to this
    max_length: int = 256  # longest prompt + answer in tokens
    evals_per_epoch: int = 1  # validation points per epoch (and one before): the implicit reward's log loss, accuracy

    @classmethod
    def smoke(cls) -> DPOConfig:
        return cls(groups_per_batch=2, warmup_steps=1, evals_per_epoch=1)
