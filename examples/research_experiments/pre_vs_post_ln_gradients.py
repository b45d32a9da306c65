"""Pre-LN vs post-LN: how the gradient reaches each layer (the notes' "How does layer normalization affect gradient
flow?").

Two models differ only in where LayerNorm sits: post-LN (original BERT) x = LN(x + F(x)), pre-LN
x = x + F(LN(x)). Their gradient norms per parameter group are printed at initialisation and after a few AdamW
steps, for the same masked batches.

What it teaches: in a pre-LN model the residual stream is an identity path from the loss to every layer, so the
lower layers' gradients stay comparable to the upper ones'; in post-LN every layer's LayerNorm rescales the
gradient on the way down, and with depth the lower layers' gradients shrink relative to the top (one reason
post-LN needs learning-rate warmup). The "bottom / top" column is the ratio of the first layer's gradient norm to
the last layer's: measured with the defaults, post-LN's falls from ~0.25 to ~0.06 in 30 steps while pre-LN's stays
above 1.

The initial weights here are larger than BERT's (std 0.2, --init-range): at BERT's 0.02 every residual branch
starts so small that both models are nearly the identity and behave alike (try it) — the difference grows as
the branches do, which training makes happen in a real run.

    python examples/research_experiments/pre_vs_post_ln_gradients.py [--layers 8] [--steps 30] [--init-range 0.2]
"""

import argparse

from mini_bert import MiniBERT, ModelConfig
from mini_bert.analysis.dynamics import analyze_gradient_magnitudes_by_layer
from mini_bert.analysis.inspection import mlm_loss_and_gradients
from mini_bert.training.checkpoint_utils import synthetic_batch
from mini_bert.training.optimizer import AdamW, clip_grad_norm, decay_mask

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--layers", type=int, default=8)
parser.add_argument("--steps", type=int, default=30, help="AdamW steps between the two measurements")
parser.add_argument("--lr", type=float, default=1e-3)
parser.add_argument("--init-range", type=float, default=0.2, help="std of the initial weights (BERT: 0.02)")
args = parser.parse_args()

probe = synthetic_batch(200, batch_size=8, seq_len=32, seed=123)     # the batch the gradients are measured on


def report(model, label):
    loss, grads, _ = mlm_loss_and_gradients(model, probe)
    stats = analyze_gradient_magnitudes_by_layer(grads)
    layers = [g for g in stats["groups"] if g.startswith("layer_")]
    norms = [stats["grad_norm"][g] for g in layers]
    print(f"{label:<22} loss {loss:5.3f}  " + " ".join(f"{n:8.2e}" for n in norms)
          + f"   {norms[0] / norms[-1]:6.2f}")


print(f"{'':<22} {'':10} " + " ".join(f"{f'layer {l}':>8}" for l in range(args.layers)) + "   bottom / top")
for norm in ("post", "pre"):
    cfg = ModelConfig(vocab_size=200, hidden_size=32, num_layers=args.layers, num_heads=2, intermediate_size=64,
                      max_position_embeddings=32, norm_position=norm, activation="gelu",
                      initializer_range=args.init_range)
    model = MiniBERT(cfg, seed=0)
    report(model, f"{norm}-LN, init")
    opt = AdamW(model.store.flat, decay_mask(model.store), lr=args.lr)
    for step in range(args.steps):
        _, grads, _ = mlm_loss_and_gradients(model, synthetic_batch(200, 8, 32, seed=step))
        clip_grad_norm(grads.flat, 1.0)
        opt.step(grads.flat)
    report(model, f"{norm}-LN, {args.steps} steps")
print("Gradient norms of each layer's weight matrices (analyze_gradient_magnitudes_by_layer), eval mode.")
