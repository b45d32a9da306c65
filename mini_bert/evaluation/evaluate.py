"""The full evaluation report of a checkpoint: intrinsic (masked-token prediction), POS probe, SST-2.

`minibert evaluate --checkpoint DIR [--quick] [--output F] [--data-dir D]`
`minibert evaluate --overfit-one-batch [--quick]`   (the sanity check of training/sanity.py)

Each section is one call into the module that owns it (intrinsic.py, probing.py, downstream.py); this module
only chooses the sizes, collects the results and writes them: a table on stdout, and with --output F, the JSON
result in F and the same tables as Markdown beside it (F with the suffix .md).
--quick shrinks every section (a few validation batches, 200 tagged sentences, 2,000 SST-2 training sentences,
one epoch, one seed) to finish in under 3 minutes on two cores; the full report of the base model takes about half
an hour (SST-2's 3 epochs x 3 seeds x 2 models dominate).
A section whose dataset is missing (and cannot be downloaded) is reported as skipped, with the reason.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..training.checkpointing import load_checkpoint
from ..data.batches import encode_corpus, fixed_validation_batches, pack_sequences
from ..data.corpora import load_corpus
from ..data.readers import DataError
from .downstream import finetune_sst2_checkpoint, format_sst2_table
from .intrinsic import count_tokens, format_intrinsic_table, intrinsic_evaluation
from .probing import format_probe_table, probe_pos_checkpoint

# Sizes of each section. valid_batches None: the checkpoint's own data.valid_batches (what training reported).
FULL = {"valid_batches": None, "probe_sentences": 2000, "sst2_samples": None, "sst2_epochs": None,   # the protocol's
        "seeds": (0, 1, 2)}
QUICK = {"valid_batches": 4, "probe_sentences": 200, "sst2_samples": 2000, "sst2_epochs": 1, "seeds": (0,)}


def _intrinsic(ck, data_dir, valid_batches, log) -> dict:
    """Masked-token evaluation on the checkpoint's corpus, valid split, batched as the trainer batches it."""
    cfg, model, tok = ck.config, ck.model, ck.tokenizer
    d = cfg.data
    valid_ids = encode_corpus(load_corpus(d.corpus, "valid", data_dir), tok)
    seqs, types = pack_sequences(valid_ids, d.max_seq_len)
    batches = fixed_validation_batches(seqs, types, cfg.training.batch_size, cfg.model.vocab_size,
                                       max_batches=valid_batches or d.valid_batches)
    # Frequency bands from the training corpus: what the model saw, not what it is tested on.
    counts = count_tokens(encode_corpus(load_corpus(d.corpus, "train", data_dir), tok), cfg.model.vocab_size)
    log(f"intrinsic: {len(batches)} fixed masked batches of the {d.corpus} validation split")
    if cfg.training.objective == "electra":
        log("intrinsic: this model is an ELECTRA discriminator; no loss trained its masked-LM head, so the masked "
            "accuracy below measures an untrained head (the run's metrics.jsonl holds its generator's and its "
            "replaced-token accuracy)")
    result = intrinsic_evaluation(model, batches, vocab=tok.vocab, token_counts=counts)
    result["corpus"] = d.corpus
    return result


def _section(name: str, fn, log) -> dict:
    """Run one section; a missing dataset (DataError / download failure) becomes {"skipped": reason}."""
    t0 = time.perf_counter()
    try:
        result = fn()
    except (DataError, OSError) as e:
        log(f"{name}: skipped ({e})")
        return {"skipped": str(e)}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def format_report(report: dict) -> str:
    """The whole report as Markdown: a header, then each section's table."""
    lines = [f"# Evaluation of {report['checkpoint']}" + (" (quick)" if report["quick"] else ""), ""]
    if report.get("step") is not None:
        lines += [f"training step {report['step']}", ""]
    for key, title, fmt in (("intrinsic", "Intrinsic: masked-token prediction", format_intrinsic_table),
                            ("pos_probe", "POS probe (UD English-EWT)", format_probe_table),
                            ("sst2", "SST-2 fine-tuning", format_sst2_table)):
        section = report.get(key)
        if section is None:
            continue
        lines += [f"## {title}", ""]
        lines.append(f"skipped: {section['skipped']}" if "skipped" in section else fmt(section))
        lines.append("")
    lines.append(f"total time {report['seconds']:.0f}s")
    return "\n".join(lines)


def report_paths(output) -> tuple[Path, Path]:
    """(JSON path, Markdown path) for --output F: F and F.md, or F.json and F when F itself ends in .md."""
    output = Path(output)
    if output.suffix == ".md":
        return output.with_suffix(".json"), output
    return output, output.with_suffix(".md")


def evaluate_checkpoint(checkpoint_dir, quick: bool = False, data_dir=None, output=None, log=print) -> dict:
    """Intrinsic evaluation + POS probe + SST-2 of one checkpoint; returns the report (JSON-serialisable).

    data_dir: the data root (default: the checkpoint's data.data_dir, else $MINIBERT_DATA_DIR / ../shared/data).
    output: write the JSON report there and the Markdown report beside it (same name, suffix .md).
    """
    log = log or (lambda *_: None)
    t0 = time.perf_counter()
    ck = load_checkpoint(checkpoint_dir, need_tokenizer=True)
    sizes = QUICK if quick else FULL
    data_dir = data_dir if data_dir is not None else ck.config.data.data_dir
    model, tok = ck.model, ck.tokenizer
    report: dict = {"checkpoint": str(ck.path), "step": ck.trainer_state.get("step"), "quick": quick,
                    "sizes": {k: list(v) if isinstance(v, tuple) else v for k, v in sizes.items()}}
    report["intrinsic"] = _section("intrinsic", lambda: _intrinsic(ck, data_dir, sizes["valid_batches"], log), log)
    log("POS probe...")
    report["pos_probe"] = _section("POS probe", lambda: probe_pos_checkpoint(
        None, data_dir=data_dir, max_sentences=sizes["probe_sentences"], model=model, tokenizer=tok, log=log), log)
    log("SST-2 fine-tuning...")
    report["sst2"] = _section("SST-2", lambda: finetune_sst2_checkpoint(
        None, data_dir=data_dir, epochs=sizes["sst2_epochs"], max_samples=sizes["sst2_samples"],
        seeds=sizes["seeds"], model=model, tokenizer=tok, log=log), log)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    if output is not None:
        json_path, md_path = report_paths(output)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        md_path.write_text(format_report(report) + "\n", encoding="utf-8")
    return report
