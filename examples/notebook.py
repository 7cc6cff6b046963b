"""The library API on models a notebook holds: score the teacher, prune a copy in memory, distil, measure.

    python examples/notebook.py                          # the default teacher (SmolLM2-135M-Instruct), ~10 minutes
    python examples/notebook.py --teacher DIR --data DATA --tokens 1024 --seq-len 32
"""
import argparse

import minitron


def main(teacher: str = "default", data: str | None = None, out: str = "runs/notebook", tokens: int = 65_536,
         seq_len: int = 256) -> dict:
    model = minitron.load_model(teacher)  # any Hugging Face causal LM of a supported family, in memory
    scores = minitron.score(model, data, calib_seqs=16, seq_len=seq_len, layer_loss=True, block_sizes=[2])
    sizes = {"intermediate_size": model.config.intermediate_size // 2,  # any partial target: the rest stay
             "num_hidden_layers": model.config.num_hidden_layers - 2}
    student = minitron.prune(model, scores, sizes)  # a pruned copy; the teacher is untouched
    test = minitron.TokenData.open(data or minitron.default_data(teacher)).spread("test", 16, seq_len)
    before = minitron.measure({"teacher": model, "student": student}, test, 4, teacher="teacher")
    config = minitron.TrainConfig(out=out, tokens=tokens, seq_len=seq_len, overwrite=True)
    result = minitron.distill(model, student, data, config)  # trains `student` in place; the run is in `out`
    after = minitron.measure({"teacher": model, "student": student}, test, 4, teacher="teacher")["student"]
    print(f"{sizes}: test loss teacher {before['teacher']['loss']:.3f}, pruned {before['student']['loss']:.3f}, "
          f"distilled {after['loss']:.3f}; KL to the teacher {before['student']['kl']:.3f} -> {after['kl']:.3f}; "
          f"checkpoint in {result.student}")
    return {"pruned": before["student"], "distilled": after, "student": result.student}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default="default")
    p.add_argument("--data", default=None, help="a `minitron data` directory (default: the default corpus)")
    p.add_argument("--out", default="runs/notebook")
    p.add_argument("--tokens", type=int, default=65_536)
    p.add_argument("--seq-len", type=int, default=256)
    main(**vars(p.parse_args()))
