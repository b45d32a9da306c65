"""`minibert finetune-sst2`: fine-tune a checkpoint on SST-2 beside random init and bag of words."""

from __future__ import annotations

from ..errors import MiniBertError
from .arguments import ON_OFF, count


def parse_seeds(text: str) -> list[int]:
    """"0,1,2" -> [0, 1, 2]."""
    try:
        seeds = [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise MiniBertError(f"--seeds must be comma-separated integers like 0,1,2; got {text!r}") from None
    if not seeds:
        raise MiniBertError("--seeds is empty; give at least one, e.g. --seeds 0")
    return seeds


def add_parser(sub, common) -> None:
    from ..evaluation.downstream import PROTOCOL

    p = sub.add_parser("finetune-sst2", parents=[common[k] for k in ("checkpoint", "data_dir", "output")],
                       help="fine-tune on SST-2 sentiment, with baselines")
    p.add_argument("--epochs", type=count(1), default=PROTOCOL["epochs"])
    p.add_argument("--max-samples", type=count(1), default=None, help="use at most N training sentences (default: all)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--lr", type=float, default=PROTOCOL["lr"])
    p.add_argument("--batch-size", type=count(1), default=PROTOCOL["batch_size"])
    p.add_argument("--pooling", choices=("cls", "mean"), default=PROTOCOL["pooling"],
                   help="what the classifier pools: h_[CLS] or the mean of the tokens")
    p.add_argument("--adapt-steps", type=count(0), default=0,
                   help="first continue masked-LM training on the training sentences for N steps (task-adaptive "
                        "pretraining, masking whole words or single tokens as the checkpoint's pretraining did), "
                        "reported as its own row (default 0: off)")
    p.add_argument("--adapt-rows", choices=("single", "packed"), default="single",
                   help="rows of the task-adaptive MLM: one training sentence a row, as the classifier reads them "
                        "(default), or several sentences packed into each row")
    p.add_argument("--train-set", choices=("sentences", "glue"), default="sentences",
                   help="fine-tune on the 6,920 SST-2 sentences or on GLUE's 67,349 phrases (dev: the same 872)")
    p.add_argument("--warmup-ratio", type=float, default=PROTOCOL["warmup_ratio"],
                   help="share of the steps spent warming up")
    p.add_argument("--patience", type=count(1), default=PROTOCOL["patience"],
                   help="stop after N dev evaluations without improvement")
    p.add_argument("--layer-lr-decay", type=float, default=PROTOCOL["layer_lr_decay"],
                   help="layer l of L trains at lr * decay^(L-1-l), the embeddings at decay^L (default 0.8; 1: off)")
    p.add_argument("--reinit-layers", type=count(0), default=PROTOCOL["reinit_layers"],
                   help="draw the top N encoder layers of the pretrained (and adapted) model afresh before "
                        "fine-tuning (default 0: keep them all)")
    p.add_argument("--group-by-length", action=ON_OFF, default=PROTOCOL["group_by_length"],
                   help="batch sentences of similar length together, so batches carry little padding (default: on)")
    p.add_argument("--raw-text", action=ON_OFF, default=PROTOCOL["raw_text"],
                   help="spell SST-2's Penn-Treebank tokens back as raw text (do n't -> don't, -lrb- -> \"(\"), as "
                        "the pretraining corpus writes them (default: off, the text as distributed)")
    p.add_argument("--skip", default="", help="comma-separated arms to leave out: pretrained, random-init, "
                                              "bag-of-words (e.g. to add a task-adaptive row to an earlier run)")
    p.add_argument("--jobs", type=count(1), default=1,
                   help="run the fine-tunings in N processes (machines with more cores; same numbers)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..evaluation.downstream import finetune_sst2_checkpoint, format_sst2_table

    skip = {x.strip() for x in args.skip.split(",") if x.strip()}
    unknown = skip - {"pretrained", "random-init", "bag-of-words"}
    if unknown:
        raise MiniBertError(f"--skip takes pretrained, random-init and/or bag-of-words; got "
                            f"{', '.join(sorted(unknown))}")
    result = finetune_sst2_checkpoint(args.checkpoint, data_dir=args.data_dir, epochs=args.epochs,
                                      max_samples=args.max_samples, seeds=parse_seeds(args.seeds),
                                      output=args.output, lr=args.lr, batch_size=args.batch_size, n_jobs=args.jobs,
                                      pooling=args.pooling, warmup_ratio=args.warmup_ratio, patience=args.patience,
                                      layer_lr_decay=args.layer_lr_decay, adapt_steps=args.adapt_steps,
                                      reinit_layers=args.reinit_layers, adapt={"packing": args.adapt_rows},
                                      group_by_length=args.group_by_length, raw_text=args.raw_text,
                                      pretrained="pretrained" not in skip, random_init="random-init" not in skip,
                                      bag_of_words="bag-of-words" not in skip,
                                      train_set=args.train_set)
    print(format_sst2_table(result))
    if args.output:
        print(f"\nwrote {args.output}")
    return 0
