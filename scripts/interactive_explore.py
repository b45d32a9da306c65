"""Explore a checkpoint interactively: type a sentence, see the model's predictions for each [MASK] and a summary of
where every attention head looks (`mini_bert.analysis.explorer.MathematicalExplorer`).

    python scripts/interactive_explore.py --checkpoint runs/default                    # a prompt; empty line quits
    python scripts/interactive_explore.py --checkpoint runs/default --text "the [MASK] fell sharply ."
"""

import argparse
import sys

from mini_bert.analysis.report import encode_text
from mini_bert.analysis.explorer import MathematicalExplorer
from mini_bert.training.checkpointing import load_model_and_tokenizer


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="checkpoint folder or run folder")
    p.add_argument("--text", action="append", help="explore this text and exit (repeatable); default: a prompt")
    p.add_argument("--top-k", type=int, default=5, help="predictions shown per [MASK] (default 5)")
    return p.parse_args(argv)


def explore(explorer: MathematicalExplorer, text: str, top_k: int) -> None:
    model, tok = explorer.model, explorer.tokenizer
    ids, tokens = encode_text(tok, text, model.config.max_position_embeddings)
    print("tokens:", " ".join(tokens))
    predictions = model.predict_masked(ids, top_k=top_k)
    if not predictions:
        print("(no [MASK] in the text: write [MASK] where a word should be predicted)")
    for (_, t), top_ids, probs in predictions:
        guesses = ", ".join(f"{w} {p:.3f}" for w, p in zip(tok.convert_ids_to_tokens(top_ids), probs))
        print(f"[MASK] at position {t}: {guesses}")
    for head in explorer.explore_attention_heads(text):
        looks = " ".join(f"{q}->{k}" for q, k, _ in head["attends_to"])
        print(f"layer {head['layer']} head {head['head']}: entropy {head['entropy']:.2f} nats; {looks}")


if __name__ == "__main__":
    args = parse_args()
    try:
        model, tokenizer = load_model_and_tokenizer(args.checkpoint)
    except (ValueError, FileNotFoundError) as e:
        print(f"interactive_explore: error: {e}", file=sys.stderr)
        sys.exit(2)
    explorer = MathematicalExplorer(model, tokenizer)
    texts = args.text
    if texts:
        for text in texts:
            explore(explorer, text, args.top_k)
        sys.exit(0)
    print("Type a sentence (use [MASK] for words to predict); an empty line quits.")
    while True:
        try:
            text = input(">>> ").strip()
        except EOFError:
            break
        if not text:
            break
        try:
            explore(explorer, text, args.top_k)
        except ValueError as e:
            print(f"error: {e}")
