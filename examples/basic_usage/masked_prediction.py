"""Fill in [MASK] with a trained checkpoint: the model's top guesses and their probabilities.

What it teaches: how text becomes ids ([CLS] text [SEP], WordPiece pieces), that the MLM head scores every
vocabulary entry at a masked position (softmax of h W_mlm ... E_token^T: the decoder shares the input embedding
matrix), and how to read those scores as a probability distribution.

    python examples/basic_usage/masked_prediction.py --checkpoint runs/debugging
    python examples/basic_usage/masked_prediction.py --checkpoint runs/default --text "the [MASK] rose sharply ."

(`minibert train --config debugging` makes a checkpoint in about a minute.)
"""

import argparse

from mini_bert.analysis.report import encode_text
from mini_bert.training.checkpointing import load_model_and_tokenizer

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--checkpoint", required=True, help="a checkpoint folder or run folder")
parser.add_argument("--text", default="the company said its [MASK] fell in the third quarter .")
parser.add_argument("--top-k", type=int, default=5)
args = parser.parse_args()

model, tokenizer = load_model_and_tokenizer(args.checkpoint)
ids, tokens = encode_text(tokenizer, args.text, model.config.max_position_embeddings)   # (1, T)
print("tokens:", " ".join(tokens))
predictions = model.predict_masked(ids, top_k=args.top_k)
if not predictions:
    print("the text has no [MASK]; put one where a word should be predicted")
for (_, position), top_ids, probs in predictions:
    words = tokenizer.convert_ids_to_tokens(top_ids)
    print(f"position {position}: " + ", ".join(f"{w} ({p:.1%})" for w, p in zip(words, probs)))
