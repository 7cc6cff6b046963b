"""Layer-streamed scoring and pruning equal the in-memory ones, and bad checkpoints fail cleanly."""
import json
import shutil

import pytest
import torch
from torch import nn
from torch.testing import assert_close
from transformers import AutoModelForCausalLM

import minitron.importance.command
import minitron.lazy
from conftest import FALCON_LAYOUTS, FAMILIES, cli_error, own_names, run_cli, save_tiny, tiny_model, tiny_tokenizer
from minitron.arch import arch_of
from minitron.importance import Scores, compute_scores, random_scores
from minitron.lazy import LazyModel
from minitron.load import load_model
from minitron.prune import PruneConfig, apply_plan, check_target, make_plan, params_of, target_config, write_pruned
from minitron.shards import Checkpoint


def streamed_scores(path, *args, dtype=torch.float32, **kwargs):
    """Scores of a checkpoint streamed one layer at a time (the same walk as in memory, layers not resident)."""
    return compute_scores(LazyModel.open(path, "cpu", dtype), *args, **kwargs)

BATCHES = [torch.randint(0, 256, (3, 20), generator=torch.Generator().manual_seed(i)) for i in range(2)]
IDS = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(9))
CRITERIA = ["activation", "wanda", "magnitude", "random"]
TARGET = dict(hidden_size=40, intermediate_size=48, num_attention_heads=4, num_key_value_heads=1)


def save_sharded(path, family="llama", tie=False, dtype=torch.float32, shard="100KB"):
    """A tiny model (+ tokenizer) saved by stock transformers in several shards with an index."""
    tiny_model(family, tie).to(dtype).save_pretrained(path, max_shard_size=shard)
    tiny_tokenizer().save_pretrained(path)
    return path


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


@pytest.mark.parametrize("family", FAMILIES)
def test_streamed_scores_equal_in_memory_scores(family, tmp_path):
    path = save_sharded(tmp_path / "m", family, tie=family in ("llama", "gemma3_text"))
    assert len(json.loads((path / "model.safetensors.index.json").read_text())["weight_map"]) > 0
    assert len(list(path.glob("model-*.safetensors"))) > 2
    expected = compute_scores(load_model(path), BATCHES, CRITERIA, BATCHES[:1], [1, 2], seed=3)
    got = streamed_scores(path, BATCHES, CRITERIA, BATCHES[:1], [1, 2], seed=3)
    assert got.tensors.keys() == expected.tensors.keys()
    assert {"layers/loss", "layers/block_loss_k2", "layers/block_influence", "wanda/mlp"} <= got.tensors.keys()
    for key, value in expected.tensors.items():
        assert_close(got.tensors[key], value, rtol=1e-5, atol=1e-6, msg=key)
    assert got.meta["base_loss"] == expected.meta["base_loss"]
    assert got.meta["params"] == expected.meta["params"]


def test_opt_files_named_as_released_are_read_and_written_so(tmp_path):
    """OPT's released files name the decoder decoder. (transformers saves model.decoder., and reads both): streamed,
    such a file scores and prunes as the model in memory does, and the student's file names it as the teacher's."""
    from safetensors.torch import load_file, save_file

    path = save_sharded(tmp_path / "m", "opt", tie=True)
    index = json.loads((path / "model.safetensors.index.json").read_text())
    for shard in set(index["weight_map"].values()):
        tensors = {k.removeprefix("model."): v for k, v in load_file(path / shard).items()}
        save_file(tensors, path / shard, metadata={"format": "pt"})
    index["weight_map"] = {k.removeprefix("model."): v for k, v in index["weight_map"].items()}
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    teacher = load_model(path)
    plan, _, specs = scored_and_pruned_streamed(path, teacher, tmp_path / "out")
    assert all(name.startswith("decoder.") for name in specs)
    assert_close(logits(load_model(tmp_path / "out")), logits(apply_plan(teacher, plan)), rtol=0, atol=0)


def scored_and_pruned_streamed(path, teacher, out):
    """The checkpoint at `path` scored streamed (checked equal to `teacher`'s scores in memory) and pruned streamed by
    a random plan into `out`: (the plan, the student's config, its stored tensors' specs)."""
    got = streamed_scores(path, BATCHES, CRITERIA, BATCHES[:1], [1], seed=3)
    for key, value in compute_scores(teacher, BATCHES, CRITERIA, BATCHES[:1], [1], seed=3).tensors.items():
        assert_close(got.tensors[key], value, rtol=1e-5, atol=1e-6, msg=key)
    plan, new_config = random_plan(teacher.config)
    out.mkdir()
    write_pruned(path, plan, new_config, out)
    return plan, new_config, Checkpoint.open(out).specs


def test_gpt2_files_as_released_are_read_and_written_so(tmp_path):
    """GPT-2's released files name the decoder's tensors without a prefix (transformers saves transformer., and reads
    both), hold each layer's causal mask (attn.bias, which transformers drops) and store the Conv1D weights (in, out);
    its config leaves n_inner None. Streamed, such a file scores and prunes as the model in memory does (which holds
    linears, `as_linears`), and the student's file is stored as the teacher's: no prefix, Conv1D's layout."""
    from safetensors.torch import load_file, save_file

    path = tmp_path / "m"
    tiny_model("gpt2", tie=True, intermediate_size=256).save_pretrained(path)  # (4 x hidden_size neurons)
    tiny_tokenizer().save_pretrained(path)
    tensors = {k.removeprefix("transformer."): v for k, v in load_file(path / "model.safetensors").items()}
    tensors.update({f"h.{i}.attn.bias": torch.ones(1, 1, 256, 256).tril() for i in range(4)})
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "n_inner": None}))
    teacher = load_model(path)
    assert teacher.config.n_inner == 256 and isinstance(teacher.transformer.h[0].mlp.c_fc, nn.Linear)
    assert teacher.transformer.h[0].mlp.c_fc.weight.shape == (256, 64)  # (out, in) in memory
    plan, new_config, specs = scored_and_pruned_streamed(path, teacher, tmp_path / "out")
    assert not any(name.startswith("transformer.") for name in specs) and "h.0.attn.bias" not in specs
    assert specs["h.0.mlp.c_fc.weight"].shape == (new_config.hidden_size, new_config.n_inner)  # (in, out), stored
    expected = logits(apply_plan(teacher, plan))
    assert_close(logits(AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()), expected, rtol=0, atol=0)
    assert_close(logits(load_model(tmp_path / "out")), expected, rtol=0, atol=0)


def test_gpt_neo_files_as_released_stream_as_in_memory(tmp_path):
    """GPT-Neo's released files hold each layer's causal mask and masked_bias (buffers transformers does not load), its
    config leaves intermediate_size None (4 x hidden_size) and says its global and local layers as runs
    (attention_types): streamed, it scores and prunes as in memory, the buffers left out, and the student's layers keep
    their kinds (layer 2, a global one, dropped from between local ones)."""
    from safetensors.torch import load_file, save_file

    path = tmp_path / "m"
    tiny_model("gpt_neo", tie=True, intermediate_size=256).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    tensors = load_file(path / "model.safetensors")
    for i in range(4):
        tensors[f"transformer.h.{i}.attn.attention.bias"] = torch.ones(1, 1, 256, 256, dtype=torch.bool).tril()
        tensors[f"transformer.h.{i}.attn.attention.masked_bias"] = torch.tensor(-1e9)
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "intermediate_size": None}))
    teacher = load_model(path)
    assert teacher.config.intermediate_size == 256 and teacher.config.attention_layers[:2] == ["global", "local"]
    plan, new_config, specs = scored_and_pruned_streamed(path, teacher, tmp_path / "out")
    assert not any(name.endswith(("attention.bias", "masked_bias")) for name in specs)
    student = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    kept = [i for i in range(4) if i not in plan.drop]
    assert student.config.attention_layers == [teacher.config.attention_layers[i] for i in kept]
    assert_close(logits(student), logits(apply_plan(teacher, plan)), rtol=0, atol=0)


@pytest.mark.parametrize("layout", FALCON_LAYOUTS)
def test_falcon_layouts_stream_as_in_memory_and_load_in_transformers(layout, tmp_path):
    """Falcon's layouts beside the 40B's: Falcon-7B's config as released names no KV heads (its one is implied by
    multi_query) and no ffn_hidden_size (4 x hidden_size); each layout scores and prunes streamed as in memory, and
    stock transformers loads the student as minitron does, its num_kv_heads its KV heads."""
    path = tmp_path / "m"
    save_tiny(path, layout, intermediate_size=256)
    if layout == "falcon_7b":
        config = json.loads((path / "config.json").read_text())
        unsaid = ("num_kv_heads", "num_key_value_heads", "ffn_hidden_size")
        (path / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k not in unsaid}))
    teacher = load_model(path)
    assert teacher.config.ffn_hidden_size == 256
    plan, new_config, _ = scored_and_pruned_streamed(path, teacher, tmp_path / "out")
    expected = logits(apply_plan(teacher, plan))
    student = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert student.config.num_kv_heads == student.config.num_key_value_heads == new_config.num_key_value_heads
    assert_close(logits(student), expected, rtol=0, atol=0)
    assert_close(logits(load_model(tmp_path / "out")), expected, rtol=0, atol=0)


def test_a_granite_moe_swa_with_a_shared_expert_streams_as_in_memory(tmp_path):
    """Granite-MoE SWA with a shared expert (shared_intermediate_size set; the released default has none): its shared
    expert is scored and pruned, streamed as in memory, and stock transformers loads the student."""
    path = tmp_path / "m"
    save_tiny(path, "granitemoe_swa", shared_intermediate_size=64)
    teacher = load_model(path)
    assert arch_of(teacher.config).shared_expert and teacher.model.layers[0].shared_mlp is not None
    plan, new_config, _ = scored_and_pruned_streamed(path, teacher, tmp_path / "out")
    assert plan.shared is not None and new_config.shared_intermediate_size < 64
    expected = logits(apply_plan(teacher, plan))
    assert_close(logits(AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()), expected, rtol=0, atol=0)


def test_streamed_scores_from_a_single_file(tmp_path):
    model = tiny_model("qwen3")
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").is_file()
    expected = compute_scores(model, BATCHES, ["activation"])
    got = streamed_scores(tmp_path / "m", BATCHES, ["activation"])
    for key, value in expected.tensors.items():
        assert_close(got.tensors[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_bf16_compute_streamed_equals_in_memory_and_ranks_like_fp32(tmp_path):
    """`--dtype bfloat16`: the streamed and in-memory paths agree, the statistics stay fp32, and the scores
    rank units much as the fp32 ones do (the weight criteria, which see the same bf16 weights, exactly)."""
    path = save_sharded(tmp_path / "m", "llama", dtype=torch.bfloat16)
    fp32 = compute_scores(load_model(path), BATCHES, CRITERIA)
    in_memory = compute_scores(load_model(path, "cpu", torch.bfloat16), BATCHES, CRITERIA)
    streamed = streamed_scores(path, BATCHES, CRITERIA, dtype=torch.bfloat16)
    for key, value in in_memory.tensors.items():
        assert value.dtype == torch.float32, key
        assert_close(streamed.tensors[key], value, rtol=1e-5, atol=1e-6, msg=key)
    for key in ("magnitude/hidden", "magnitude/heads", "magnitude/mlp"):
        assert_close(in_memory.tensors[key], fp32.tensors[key], rtol=1e-5, atol=1e-6, msg=key)
    for key in ("activation/mean-l2/hidden", "activation/mean-l2/mlp", "wanda/mlp"):
        a, b = in_memory.tensors[key].flatten(), fp32.tensors[key].flatten()
        assert not torch.equal(a, b)  # computed in bf16, not fp32
        ranks = torch.stack([a.argsort().argsort(), b.argsort().argsort()]).float()
        assert torch.corrcoef(ranks)[0, 1] > 0.95, key  # Spearman correlation


def random_plan(config, drop=(2,)):
    shared = arch_of(config).shared_names.size  # (GLM-4.5's follows the experts' width)
    experts = {"num_experts": 4, **({shared: 32} if arch_of(config).shared_expert and shared else {})} \
        if arch_of(config).moe else {}
    arch = arch_of(config)  # a hybrid's recurrent heads too (Granite 4's follow hidden_size: their channels pruned)
    mixer = {"mamba": {arch.mamba_names.heads: 4, arch.mamba_names.head_dim: 6} if not arch.mamba_expand else
             {arch.mamba_names.heads: 8, arch.mamba_names.head_dim: 2 * TARGET["hidden_size"] // 8},
             "delta": {"linear_num_key_heads": 1, "linear_num_value_heads": 2}}.get(arch.mixer, {})
    sizes = check_target(config, own_names(config, {**TARGET, **experts, **mixer}), list(drop))
    scores = Scores({f"random/{k}": v for k, v in random_scores(config, 0).items() if k != "layers"})
    return (make_plan(scores, config, sizes, PruneConfig(criterion="random", drop_layers=list(drop))),
            target_config(config, sizes, list(drop)))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_streamed_prune_equals_in_memory_prune(family, dtype, tmp_path):
    path = save_sharded(tmp_path / "m", family, tie=family in ("qwen2", "nemotron"), dtype=dtype)
    teacher = AutoModelForCausalLM.from_pretrained(path).eval()
    plan, new_config = random_plan(teacher.config)
    (tmp_path / "out").mkdir()
    written = write_pruned(path, plan, new_config, tmp_path / "out", max_shard_bytes=40_000)
    expected = apply_plan(teacher, plan)
    got = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert len(list((tmp_path / "out").glob("model-*.safetensors"))) > 1
    stored = set(expected.state_dict())  # the buffers a checkpoint stores too (Apertus's xIELU constants)
    buffers = sum(b.numel() for n, b in expected.named_buffers() if n in stored)
    assert written == params_of(new_config) == Checkpoint.open(tmp_path / "out").numel() - buffers
    state = got.state_dict()
    assert state.keys() == expected.state_dict().keys()
    for key, value in expected.state_dict().items():  # (what transformers keeps in fp32 in any model: LFM2-MoE's
        # expert_bias buffer, GLM-4.5's and Hunyuan's routers, fp32 in both)
        assert state[key].dtype == value.dtype and value.dtype in (dtype, torch.float32), key
        assert torch.equal(state[key], value), key
    assert_close(logits(got), logits(expected), rtol=0, atol=0)


def test_a_checkpoint_of_mixed_stored_dtypes_prunes_streamed_as_in_memory(tmp_path):
    """A GGUF teacher converted from an f16 file stores its matrices in f16 and its norms in fp32: streamed, each
    tensor of the student keeps its stored dtype and the values the in-memory pruning of the fp32 model gives."""
    from safetensors.torch import load_file, save_file

    path = save_sharded(tmp_path / "m", "llama", shard="10GB")
    weights = load_file(path / "model.safetensors")
    save_file({k: v.half() if v.dim() > 1 else v for k, v in weights.items()}, path / "model.safetensors",
              metadata={"format": "pt"})
    teacher = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    plan, new_config = random_plan(teacher.config)
    (tmp_path / "out").mkdir()
    write_pruned(path, plan, new_config, tmp_path / "out")
    expected = apply_plan(teacher, plan).state_dict()
    stored = load_file(tmp_path / "out" / "model.safetensors")
    assert stored.keys() == expected.keys()
    for key, value in stored.items():
        assert value.dtype == (torch.float16 if value.dim() > 1 else torch.float32), key
        assert torch.equal(value.float(), expected[key]), key


def test_streaming_reads_one_layer_at_a_time(tmp_path, monkeypatch):
    path = save_sharded(tmp_path / "m", "llama")
    teacher = AutoModelForCausalLM.from_pretrained(path)
    part = max(teacher.model.embed_tokens.weight.numel(), sum(p.numel() for p in teacher.model.layers[0].parameters()))
    sizes, read = [], Checkpoint.read
    monkeypatch.setattr(Checkpoint, "read", lambda self, names, *a, **k: sizes.append(
        sum(self.specs[n].numel for n in names)) or read(self, names, *a, **k))
    streamed_scores(path, BATCHES, CRITERIA)
    plan, new_config = random_plan(teacher.config)
    (tmp_path / "out").mkdir()
    write_pruned(path, plan, new_config, tmp_path / "out")
    assert len(sizes) > 2 * teacher.config.num_hidden_layers and max(sizes) <= part


def test_big_tensors_are_read_in_row_chunks(tmp_path, monkeypatch):
    import minitron.shards

    path = save_sharded(tmp_path / "m", "llama", dtype=torch.bfloat16)
    ckpt, opened, real_open = Checkpoint.open(path), [], minitron.shards.safe_open
    monkeypatch.setattr(minitron.shards, "CHUNK_BYTES", 1000)
    monkeypatch.setattr(minitron.shards, "safe_open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    got = ckpt.read(list(ckpt.specs), torch.float32)
    assert len(opened) > 3 * len(ckpt.specs)  # big tensors came in pieces
    for name, value in AutoModelForCausalLM.from_pretrained(path).state_dict().items():
        assert got[name].dtype == torch.float32 and torch.equal(got[name], value.float()), name


# ------------------------------------------------------------------------------ the commands

WORDS = "the teacher streams one layer at a time while the student keeps the channels that matter".split()


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """A sharded tiny llama with tokenizer, and token data made with its tokenizer."""
    from minitron.data import build_data

    root = tmp_path_factory.mktemp("stream")
    path = save_sharded(root / "model", "llama")
    (root / "text").mkdir()
    for d in range(30):
        (root / "text" / f"{d:02d}.txt").write_text(" ".join(WORDS[(d + i) % len(WORDS)] for i in range(80)))
    data = build_data(source=[str(root / "text")], tokenizer=str(path), out=root / "data", glob="*.txt",
                      dev_fraction=0.2, test_fraction=0.2)
    return path, data


def test_commands_stream_when_the_model_does_not_fit(sharded, tmp_path, monkeypatch, capsys):
    path, data = sharded
    calib = ["--data", data, "--calib-seqs", 4, "--seq-len", 16, "--batch-size", 2]
    monkeypatch.setattr(minitron.lazy, "memory_available", lambda: 100_000)  # less than the fp32 weights
    run_cli("score", "--model", path, *calib, "--out", tmp_path / "scores")
    said = [line for line in capsys.readouterr().out.splitlines() if "streaming" in line]
    assert len(said) == 1 and "one layer at a time" in said[0] and "--no-stream" in said[0]
    assert Scores.load(tmp_path / "scores").meta["streamed"] is True
    target = "hidden_size=40,intermediate_size=48,num_attention_heads=4"
    run_cli("prune", "--model", path, "--scores", tmp_path / "scores", "--target", target, "--out", tmp_path / "s")
    assert "one layer at a time" in capsys.readouterr().out
    run_cli("prune", "--model", path, "--scores", tmp_path / "scores", "--target", target, "--out", tmp_path / "m",
        "--no-stream")
    assert "streaming" not in capsys.readouterr().out
    streamed, in_memory = (json.loads((tmp_path / d / "pruning.json").read_text()) for d in ("s", "m"))
    assert streamed["streamed"] and not in_memory["streamed"]
    got = AutoModelForCausalLM.from_pretrained(tmp_path / "s").eval()
    assert sum(p.numel() for p in got.parameters()) == streamed["params_after"]
    assert_close(logits(got), logits(AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()))
    assert (tmp_path / "s" / "tokenizer.json").is_file() and (tmp_path / "s" / "generation_config.json").is_file()


def test_the_compute_dtype_decides_what_fits(sharded, tmp_path, monkeypatch, capsys):
    path, data = sharded
    numel = Checkpoint.open(path).numel()
    monkeypatch.setattr(minitron.lazy, "memory_available", lambda: 3 * numel)  # bf16 fits, fp32 does not
    calib = ["--data", data, "--calib-seqs", 2, "--seq-len", 16, "--batch-size", 2, "--criteria", "activation"]
    run_cli("score", "--model", path, *calib, "--dtype", "bfloat16", "--out", tmp_path / "bf16")
    assert "streaming" not in capsys.readouterr().out
    run_cli("score", "--model", path, *calib, "--out", tmp_path / "fp32")
    assert "GiB in float32" in capsys.readouterr().out
    meta = {d: Scores.load(tmp_path / d).meta for d in ("bf16", "fp32")}
    assert meta["bf16"]["compute_dtype"] == "bfloat16" and not meta["bf16"].get("streamed")
    assert meta["fp32"]["compute_dtype"] == "float32" and meta["fp32"]["streamed"] is True


@pytest.mark.parametrize("family", ["apertus", "llama"])
def test_the_prune_command_streams_as_it_prunes_in_memory(family, tmp_path):
    """`prune --stream` and `--no-stream` write the same model, and the streamed writer's count is the parameters'
    (an Apertus checkpoint also stores its xIELU constants, which once tripped the command's own count check)."""
    path = save_sharded(tmp_path / "m", family)
    args = ["--model", path, "--target", "intermediate_size=48,hidden_size=48", "--prune.criterion", "magnitude"]
    with pytest.MonkeyPatch.context() as patch:  # magnitude reads the weights alone: no corpus is built or read
        patch.setattr(minitron.importance.command, "default_data", lambda *_: pytest.fail("calibration data read"))
        run_cli("prune", *args, "--stream", "--out", tmp_path / "s")
        run_cli("prune", *args, "--no-stream", "--out", tmp_path / "n")
    streamed, in_memory = (AutoModelForCausalLM.from_pretrained(tmp_path / d).eval() for d in ("s", "n"))
    assert_close(logits(streamed), logits(in_memory), rtol=0, atol=0)
    assert json.loads((tmp_path / "s" / "pruning.json").read_text())["calibration"] is None


def test_prune_stream_scores_depth_like_in_memory(sharded, tmp_path):
    path, data = sharded
    args = ["--model", path, "--data", data, "--prune.calib-seqs", 4, "--prune.seq-len", 16, "--batch-size", 2,
            "--target", "num_hidden_layers=2,intermediate_size=48", "--prune.layer-criterion", "block"]
    run_cli("prune", *args, "--stream", "--out", tmp_path / "s")
    run_cli("prune", *args, "--no-stream", "--out", tmp_path / "m")
    streamed, in_memory = (json.loads((tmp_path / d / "pruning.json").read_text()) for d in ("s", "m"))
    assert streamed["dropped_layers"] == in_memory["dropped_layers"] and len(streamed["dropped_layers"]) == 2
    assert_close(logits(AutoModelForCausalLM.from_pretrained(tmp_path / "s").eval()),
                 logits(AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()))


def test_taylor_cannot_stream(sharded, tmp_path, capsys):
    path, data = sharded
    err = cli_error(capsys, "score", "--model", path, "--data", data, "--stream", "--criteria", "taylor",
                "--out", tmp_path / "o")
    assert "taylor" in err and "backward pass through the whole model" in err and not (tmp_path / "o").exists()


def missing_shard(model):
    victim = sorted(model.glob("model-*.safetensors"))[1]
    victim.unlink()
    return victim


def index_names_absent_tensor(model):
    index = json.loads((model / "model.safetensors.index.json").read_text())
    victim = model / index["weight_map"]["model.norm.weight"]
    index["weight_map"]["model.layers.0.mlp.extra.weight"] = victim.name
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    return victim


def truncated_shard(model):
    victim = sorted(model.glob("model-*.safetensors"))[0]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size * 2 // 3])
    return victim


def index_lacks_tensor(model):
    index = json.loads((model / "model.safetensors.index.json").read_text())
    del index["weight_map"]["model.layers.1.self_attn.o_proj.weight"]
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    return model / "model.safetensors.index.json"


@pytest.mark.parametrize("damage", [missing_shard, index_names_absent_tensor, truncated_shard, index_lacks_tensor])
@pytest.mark.parametrize("command", [["score", "--stream"], ["prune", "--target", "intermediate_size=48"]])
def test_bad_checkpoints_fail_in_one_line_naming_the_file(sharded, tmp_path, capsys, damage, command):
    path, data = sharded
    model = shutil.copytree(path, tmp_path / "model")
    victim = damage(model)
    calib = ["--prune.calib-seqs", 4, "--prune.seq-len", 16] if command[0] == "prune" else ["--calib-seqs", 4,
                                                                                           "--seq-len", 16]
    err = cli_error(capsys, *command, "--model", model, "--data", data, *calib, "--out", tmp_path / "out")
    assert str(victim) in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def save_block_fp8(path, reference, family: str, block: int) -> None:
    """A tiny model saved as DeepSeek V3's releases are (in `path`): every decoder linear's weight in e4m3, with
    NAME_scale_inv a number a block of `block` x `block` (the block's largest value over e4m3's, 448; a last block of
    fewer rows or columns has its own), the rest in bf16, and the config's quantization_config; and the checkpoint of
    its dequantised weights in bf16 (in `reference`), which minitron must read it as."""
    from safetensors.torch import load_file, save_file

    save_tiny(path, family)
    shutil.copytree(path, reference)
    tensors, dequantised = load_file(path / "model.safetensors"), {}
    for name, w in list(tensors.items()):
        w = w.to(torch.bfloat16)
        tensors[name] = dequantised[name] = w
        if w.dim() != 2 or not name.startswith("model.layers.") or "norm" in name or name.endswith(".gate.weight"):
            continue
        rows, cols = -(-w.shape[0] // block), -(-w.shape[1] // block)
        padded = torch.zeros(rows * block, cols * block).index_put_((torch.arange(w.shape[0])[:, None],
                                                                     torch.arange(w.shape[1])), w.float())
        scale = padded.view(rows, block, cols, block).abs().amax((1, 3)).clamp_min(1e-12) / 448.0
        expanded = scale.repeat_interleave(block, 0).repeat_interleave(block, 1)[:w.shape[0], :w.shape[1]]
        tensors[name] = (w.float() / expanded).to(torch.float8_e4m3fn)
        tensors[name + "_scale_inv"] = scale
        dequantised[name] = (tensors[name].float() * expanded).to(torch.bfloat16)
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    save_file(dequantised, reference / "model.safetensors", metadata={"format": "pt"})
    config = {**json.loads((path / "config.json").read_text()), "dtype": "bfloat16"}
    (reference / "config.json").write_text(json.dumps(config))
    config["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                     "weight_block_size": [block, block]}
    (path / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("family", ["deepseek_v3", "qwen3", "minimax_m2"])
def test_a_block_fp8_checkpoint_is_read_dequantised(family, tmp_path, monkeypatch):
    """DeepSeek V3's (and MiniMax-M2's) released weights are block-wise FP8 (e4m3, a number a block of weight_block_size rows and
    columns in NAME_scale_inv): minitron reads them dequantised (a last block of fewer rows or columns too, which
    transformers' own dequantisation mistakes), in memory and streamed, in row pieces or whole, as the model of the
    dequantised weights; pruned either way, it writes the same bf16 model, without a quantization_config."""
    import minitron.shards

    save_block_fp8(tmp_path / "m", tmp_path / "ref", family, block=32)  # (DeepSeek's 40-row kv_a_proj: 32, then 8)
    ckpt, expected = Checkpoint.open(tmp_path / "m"), Checkpoint.open(tmp_path / "ref")
    assert ckpt.block == (32, 32) and ckpt.scaled and all(s.dtype != torch.float8_e4m3fn for s in ckpt.specs.values())
    whole, want = ckpt.read(list(ckpt.specs)), expected.read(list(expected.specs))
    monkeypatch.setattr(minitron.shards, "CHUNK_BYTES", 100)  # rows read a few at a time, across blocks
    pieces = Checkpoint.open(tmp_path / "m").read(list(ckpt.specs))
    assert set(whole) == set(want)
    for name in ckpt.scaled:
        assert torch.equal(whole[name], want[name]) and torch.equal(pieces[name], want[name]), name
    monkeypatch.undo()
    with torch.no_grad():
        assert_close(load_model(tmp_path / "m")(IDS).logits, load_model(tmp_path / "ref")(IDS).logits, rtol=0, atol=0)
    args = ["--model", tmp_path / "m", "--target", "intermediate_size=48,hidden_size=48", "--prune.criterion",
            "magnitude"]
    run_cli("prune", *args, "--stream", "--out", tmp_path / "s")
    run_cli("prune", *args, "--no-stream", "--out", tmp_path / "n")
    streamed, in_memory = (AutoModelForCausalLM.from_pretrained(tmp_path / d).eval() for d in ("s", "n"))
    assert_close(logits(streamed), logits(in_memory), rtol=0, atol=0)
    written = json.loads((tmp_path / "s" / "config.json").read_text())
    assert "quantization_config" not in written and streamed.dtype == torch.bfloat16
