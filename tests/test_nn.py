"""Tests of the shared learning core: decoder, KV cache, constrained decoding, shape encoder, trainer."""

import csv
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mesh3d.errors import Mesh3DError
from mesh3d.nn import bench
from mesh3d.nn.model import GPT, FnGrammar, GPTConfig, KVCache, sample
from mesh3d.nn.shape_encoder import ShapeEncoder, ShapeEncoderConfig, farthest_point_sample
from mesh3d.nn.toy import ToyTask
from mesh3d.nn.trainer import TrainConfig, batch_indices, load_config, lr_at, train
from mesh3d.nn.weights import load_weights, read_metadata

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: a second thread only adds synchronisation, which is very slow when
    other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_gpt(positions="rope", vocab_size=11, n_embd=32, seed=0):
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=vocab_size, block_size=64, n_layer=2, n_head=2, n_embd=n_embd, positions=positions)
    return GPT(config).eval()


# ----------------------------------------------------------------------------- KV cache


@pytest.mark.parametrize("positions", ["rope", "learned"])
def test_kv_cache_gives_the_same_logits_as_no_cache(positions):
    model = tiny_gpt(positions)
    idx = torch.randint(0, 11, (2, 12))
    prefix = torch.randn(2, 5, 32)
    full, _ = model(idx, prefix)
    cache = KVCache(model.config, batch_size=2, max_len=17)
    parts = [model(idx[:, :4], prefix, cache=cache)[0],  # prefill: prefix + 4 tokens
             model(idx[:, 4:7], cache=cache)[0]]  # a chunk after cached positions (masked path)
    parts += [model(idx[:, t:t + 1], cache=cache)[0] for t in range(7, 12)]  # one token at a time
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.length == 17


def test_generation_with_and_without_cache_agree():
    model = tiny_gpt()
    prompt = torch.tensor([[1, 2], [3, 4]])
    prefix = torch.randn(2, 3, 32)
    greedy = [model.generate(prompt, 10, prefix, greedy=True, use_cache=c) for c in (True, False)]
    assert torch.equal(greedy[0], greedy[1])
    sampled = [model.generate(prompt, 10, prefix, top_k=5, generator=torch.Generator().manual_seed(3), use_cache=c)
               for c in (True, False)]
    assert torch.equal(sampled[0], sampled[1])


def test_sequence_longer_than_block_size_is_refused():
    model = tiny_gpt()
    with pytest.raises(Mesh3DError, match="block_size"):
        model(torch.zeros(1, 60, dtype=torch.long), torch.zeros(1, 5, 32))


# ----------------------------------------------------------------------------- constrained decoding

V = 11
STOP = 10  # end token of the toy grammar


def toy_rule(tokens):
    """Allowed next tokens: never 3; alternate odd and even after the prompt token; STOP after >= 4 tokens."""
    allowed = torch.zeros(V, dtype=torch.bool)
    parity = (tokens[-1] + 1) % 2
    allowed[parity:STOP:2] = True
    allowed[3] = False
    allowed[STOP] = len(tokens) >= 4
    return allowed


def obeys_rule(seq):
    seq = [int(t) for t in seq]
    if STOP in seq:
        seq = seq[:seq.index(STOP) + 1]
    return all(toy_rule(seq[:i])[seq[i]] for i in range(1, len(seq)))


def test_masks_forbid_invalid_tokens_in_greedy_sampling_and_beam():
    model = tiny_gpt(vocab_size=V)
    prompt = torch.randint(0, STOP, (8, 1))
    prefix = torch.randn(8, 3, 32)
    grammar = FnGrammar(toy_rule)
    g = torch.Generator().manual_seed(0)
    # The unconstrained model breaks the rule (so the checks below can fail)...
    free = model.generate(prompt, 8, prefix, temperature=2.0, generator=g)
    assert not all(obeys_rule(s) for s in free)
    # ...the constrained one never does, whatever the decoding.
    outputs = [model.generate(prompt, 8, prefix, greedy=True, grammar=grammar, eos_id=STOP)]
    for _ in range(20):
        outputs.append(model.generate(prompt, 8, prefix, temperature=2.0, grammar=grammar, eos_id=STOP, generator=g))
        outputs.append(model.generate(prompt, 8, prefix, top_k=4, top_p=0.9, grammar=grammar, eos_id=STOP, generator=g))
    for out in outputs:
        assert all(obeys_rule(s) for s in out)
    for seq, _ in model.beam_search(prompt, 8, 4, prefix, grammar=grammar, eos_id=STOP):
        assert obeys_rule(seq)


def test_rows_stop_at_eos_and_are_padded():
    model = tiny_gpt(vocab_size=V)
    out = model.generate(torch.tensor([[0], [1]]), 12, grammar=FnGrammar(toy_rule), eos_id=STOP, temperature=2.0,
                         generator=torch.Generator().manual_seed(1))
    for row in out.tolist():
        if STOP in row:
            assert all(t == STOP for t in row[row.index(STOP):])


def test_grammar_without_any_allowed_token_raises():
    model = tiny_gpt(vocab_size=V)
    with pytest.raises(Mesh3DError, match="grammar"):
        model.generate(torch.zeros(1, 1, dtype=torch.long), 3, grammar=FnGrammar(lambda t: torch.zeros(V, dtype=torch.bool)))


def test_top_k_one_and_tiny_top_p_are_argmax():
    logits = torch.randn(50, 20)
    assert torch.equal(sample(logits, top_k=1), logits.argmax(-1))
    assert torch.equal(sample(logits, top_p=1e-6), logits.argmax(-1))


# ----------------------------------------------------------------------------- beam search


def brute_force_best(model, prompt, prefix, n_new, rule=None):
    """(best sequence, score) over all continuations, by scoring every one with a full forward pass."""
    conts = torch.tensor(list(itertools.product(range(V), repeat=n_new)))
    seqs = torch.cat([prompt.expand(len(conts), -1), conts], dim=1)
    logits, _ = model(seqs[:, :-1], prefix.expand(len(seqs), -1, -1))
    logits = logits[:, prompt.size(1) - 1:]
    if rule is not None:
        masks = torch.stack([torch.stack([rule(s[:prompt.size(1) + i].tolist()) for i in range(n_new)]) for s in seqs])
        logits = logits.masked_fill(~masks, float("-inf"))
    scores = F.log_softmax(logits, -1).gather(-1, conts[..., None])[..., 0].sum(-1)
    best = scores.argmax()
    return seqs[best], scores[best].item()


@pytest.mark.parametrize("rule", [None, toy_rule])
def test_beam_search_finds_the_highest_scoring_sequence(rule):
    model = tiny_gpt(vocab_size=V, seed=2)
    torch.manual_seed(102)  # a case where greedy decoding misses the best sequence, with and without rule
    prompt, prefix = torch.tensor([[2]]), torch.randn(1, 3, 32)
    best_seq, best_score = brute_force_best(model, prompt, prefix, 3, rule)
    grammar = None if rule is None else FnGrammar(rule)
    # A beam as wide as all 2-token prefixes is exhaustive for 3 tokens.
    (seq, score), = model.beam_search(prompt, 3, V * V, prefix, grammar=grammar)
    assert torch.equal(seq, best_seq)
    assert score == pytest.approx(best_score, abs=1e-4)
    # Beam width 1 is greedy decoding, which scores lower here.
    (seq1, score1), = model.beam_search(prompt, 3, 1, prefix, grammar=grammar, use_cache=False)
    assert torch.equal(seq1, model.generate(prompt, 3, prefix, greedy=True, grammar=grammar)[0])
    assert score1 < best_score - 1e-3


def test_beam_search_returns_a_finished_sequence_when_the_grammar_ends_it():
    model = tiny_gpt(vocab_size=V)

    def three_then_stop(tokens):
        allowed = torch.zeros(V, dtype=torch.bool)
        allowed[STOP if len(tokens) == 4 else slice(0, STOP)] = True
        return allowed

    (seq, _), = model.beam_search(torch.tensor([[0]]), 10, 4, grammar=FnGrammar(three_then_stop), eos_id=STOP)
    assert len(seq) == 5 and seq[-1] == STOP


def test_beam_search_with_cache_matches_without():
    model = tiny_gpt(vocab_size=V, seed=2)
    prompt, prefix = torch.tensor([[1], [4]]), torch.randn(2, 3, 32)
    kwargs = dict(grammar=FnGrammar(toy_rule), eos_id=STOP)
    with_cache = model.beam_search(prompt, 7, 3, prefix, **kwargs)
    without = model.beam_search(prompt, 7, 3, prefix, use_cache=False, **kwargs)
    for (s1, v1), (s2, v2) in zip(with_cache, without):
        assert torch.equal(s1, s2) and v1 == pytest.approx(v2, abs=1e-4)


# ----------------------------------------------------------------------------- shape encoder


def random_points(B, N, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.rand(B, N, 3, generator=g) - 0.5, F.normalize(torch.randn(B, N, 3, generator=g), dim=-1)], -1)


@pytest.mark.parametrize("queries", ["learned", "fps"])
def test_shape_encoder_shapes(queries):
    torch.manual_seed(0)
    encoder = ShapeEncoder(ShapeEncoderConfig(n_latents=16, n_embd=32, n_head=2, queries=queries, out_dim=48)).eval()
    assert encoder(random_points(2, 2048)).shape == (2, 16, 48)


def test_shape_encoder_with_learned_queries_ignores_point_order():
    torch.manual_seed(0)
    encoder = ShapeEncoder(ShapeEncoderConfig(n_latents=8, n_embd=32, n_head=2)).eval()
    points = random_points(1, 500)
    shuffled = points[:, torch.randperm(500)]
    torch.testing.assert_close(encoder(points), encoder(shuffled), atol=1e-5, rtol=1e-4)


def test_farthest_point_sample_takes_one_point_per_cluster():
    centres = torch.tensor([[0.4, 0, 0], [-0.4, 0, 0], [0, 0.4, 0], [0, 0, -0.4]])
    xyz = (centres[:, None] + 0.01 * torch.randn(4, 50, 3)).reshape(1, 200, 3)
    index = farthest_point_sample(xyz, 4)[0]
    assert sorted((index // 50).tolist()) == [0, 1, 2, 3]


def test_shape_encoder_rejects_bad_points():
    encoder = ShapeEncoder(ShapeEncoderConfig(n_latents=8, n_embd=32, n_head=2))
    with pytest.raises(Mesh3DError, match="normals"):
        encoder(torch.zeros(1, 100, 3))
    with pytest.raises(Mesh3DError, match="normalised"):
        encoder(100.0 * random_points(1, 100))


# ----------------------------------------------------------------------------- trainer


def test_tiny_overfit_memorises_four_sequences_with_point_prefixes(tmp_path):
    """Shape encoder + decoder learn 4 sequences, each from its own point cloud; greedy gives them back."""
    task = ToyTask(n_sequences=4, seq_len=8, condition="points")
    cfg = TrainConfig(out_dir=str(tmp_path), max_steps=150, batch_size=8, lr=3e-3, min_lr=3e-4, warmup_steps=10,
                      log_every=50, ckpt_every=1000)
    t0 = time.perf_counter()
    model = train(task, cfg)
    print(f"tiny overfit: {time.perf_counter() - t0:.1f} s")
    assert torch.equal(task.generate(model.eval()), task.sequences)


def toy_config(out_dir, max_steps=12, **train):
    return TrainConfig(out_dir=str(out_dir), max_steps=max_steps, batch_size=4, lr=1e-2, warmup_steps=3,
                       log_every=2, ckpt_every=5, **train)


def test_resume_gives_the_same_result_as_an_uninterrupted_run(tmp_path):
    options = {"dropout": 0.1}  # dropout consumes the RNG, so its state must be resumed too
    straight = train(ToyTask(**options), toy_config(tmp_path / "a"), "mesh3d.nn.toy:ToyTask", options)
    train(ToyTask(**options), toy_config(tmp_path / "b"), "mesh3d.nn.toy:ToyTask", options, stop_at=7)
    assert not (tmp_path / "b" / "model.safetensors").exists()
    resumed = train(ToyTask(**options), toy_config(tmp_path / "b"), "mesh3d.nn.toy:ToyTask", options)
    for (name, p), q in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p, q), name
    logs = [{tuple(row[:3]): row[3] for row in csv.reader(open(tmp_path / run / "log.csv")) if row[2] != "ms_per_step"}
            for run in "ab"]
    assert logs[0].items() <= logs[1].items()  # same losses at every logged step (b also logged step 7)
    # Nothing pickled: checkpoint and export are safetensors and JSON only.
    files = {p.name for p in (tmp_path / "b").rglob("*") if p.is_file()}
    assert files == {"model.safetensors", "optimizer.safetensors", "state.json", "log.csv"}


def test_weight_average_resumes_exactly_and_is_what_is_saved(tmp_path):
    straight = train(ToyTask(), toy_config(tmp_path / "a", ema=0.9))
    train(ToyTask(), toy_config(tmp_path / "b", ema=0.9), stop_at=7)
    resumed = train(ToyTask(), toy_config(tmp_path / "b", ema=0.9))
    for (name, p), q in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p, q), name
    raw = train(ToyTask(), toy_config(tmp_path / "c"))  # the same run without the average
    assert any(not torch.equal(p, q) for p, q in zip(straight.parameters(), raw.parameters()))
    saved = ToyTask().build_model()
    load_weights(saved, tmp_path / "a" / "model.safetensors")
    for (name, p), q in zip(straight.state_dict().items(), saved.state_dict().values()):
        assert torch.equal(p, q), name
    with pytest.raises(Mesh3DError, match="without ema"):  # a checkpoint of a run without it
        train(ToyTask(), toy_config(tmp_path / "c", max_steps=14, ema=0.9))


def test_exported_weights_rebuild_the_model_without_pickle(tmp_path):
    options = {"seq_len": 4}
    model = train(ToyTask(**options), toy_config(tmp_path, max_steps=4), "mesh3d.nn.toy:ToyTask", options)
    meta = read_metadata(tmp_path / "model.safetensors")
    assert meta["task"] == "mesh3d.nn.toy:ToyTask" and meta["step"] == 4
    task = ToyTask(**meta["task_options"])
    rebuilt = task.build_model()
    load_weights(rebuilt, tmp_path / "model.safetensors")
    assert torch.equal(task.generate(rebuilt.eval()), task.generate(model.eval()))
    with pytest.raises(Mesh3DError, match="does not match"):
        load_weights(ToyTask(n_embd=16).build_model(), tmp_path / "model.safetensors")


def test_init_from_fine_tunes_given_weights_and_a_checkpoint_wins_on_resume(tmp_path):
    first = train(ToyTask(), toy_config(tmp_path / "a", max_steps=4))
    start = tmp_path / "a" / "model.safetensors"
    # With max_steps 0 nothing trains: the model is exactly the weights it started from.
    same = train(ToyTask(), toy_config(tmp_path / "b", max_steps=0, init_from=str(start)))
    for (name, p), q in zip(first.state_dict().items(), same.state_dict().values()):
        assert torch.equal(p, q), name
    tuned = train(ToyTask(), toy_config(tmp_path / "c", max_steps=6, init_from=str(start)), stop_at=3)
    assert any(not torch.equal(p, q) for p, q in zip(first.parameters(), tuned.parameters()))
    # A restart resumes from its checkpoint and never reads init_from again.
    train(ToyTask(), toy_config(tmp_path / "c", max_steps=6, init_from=str(tmp_path / "gone.safetensors")))
    assert read_metadata(tmp_path / "c" / "model.safetensors")["step"] == 6
    with pytest.raises(Mesh3DError, match="not found"):
        train(ToyTask(), toy_config(tmp_path / "d", max_steps=2, init_from=str(tmp_path / "missing.safetensors")))


def test_ddp_two_processes_keep_identical_parameters(tmp_path):
    """torchrun, 2 CPU processes (gloo): ranks stay identical and match one process on the full batch."""
    config = {"task": "mesh3d.nn.toy:ToyTask", "task_options": {"n_sequences": 8},
              "train": {"out_dir": str(tmp_path / "ddp"), "max_steps": 4, "batch_size": 8, "lr": 1e-3,
                        "warmup_steps": 1, "log_every": 2, "ckpt_every": 100}}
    (tmp_path / "run.json").write_text(json.dumps(config))
    script = tmp_path / "run_rank.py"
    script.write_text(
        "import os, sys\n"
        "from mesh3d.nn.trainer import load_config, load_task, train\n"
        "from mesh3d.nn.weights import save_weights\n"
        "spec, options, cfg = load_config(sys.argv[1])\n"
        "model = train(load_task(spec, options), cfg, spec, options)\n"
        "save_weights(model, os.path.join(sys.argv[2], f\"rank{os.environ['RANK']}.safetensors\"))\n")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(script), str(tmp_path / "run.json"), str(tmp_path)],
                            env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = []
    for r in (0, 1):
        model = ToyTask(n_sequences=8).build_model()
        load_weights(model, tmp_path / f"rank{r}.safetensors")
        ranks.append(model.state_dict())
    torch.manual_seed(0)  # the trainer's seed: the initial weights
    initial = ToyTask(n_sequences=8).build_model().state_dict()
    _, _, cfg = load_config(tmp_path / "run.json")
    cfg.out_dir = str(tmp_path / "single")
    single = train(ToyTask(n_sequences=8), cfg).state_dict()
    for name in ranks[0]:
        assert torch.equal(ranks[0][name], ranks[1][name]), name
        torch.testing.assert_close(ranks[0][name], single[name], atol=2e-5, rtol=1e-4)
    assert any(not torch.equal(ranks[0][n], initial[n]) for n in initial)  # training did move the weights


def test_batches_split_the_global_batch_over_ranks():
    whole = batch_indices(10, 4, step=3, rank=0, world_size=1)
    halves = torch.cat([batch_indices(10, 4, step=3, rank=r, world_size=2) for r in (0, 1)])
    assert torch.equal(whole, halves)
    epoch = torch.cat([batch_indices(10, 5, step=s, rank=0, world_size=1) for s in (0, 1)])
    assert sorted(epoch.tolist()) == list(range(10))  # one epoch sees every example once
    with pytest.raises(Mesh3DError, match="divisible"):
        batch_indices(10, 5, step=0, rank=0, world_size=2)


def test_cosine_schedule_with_warmup():
    cfg = TrainConfig(out_dir="", max_steps=110, lr=1.0, min_lr=0.1, warmup_steps=10)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.55) and lr_at(110, cfg) == pytest.approx(0.1)


def test_config_file_errors_are_clear(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('task = "mesh3d.nn.toy:ToyTask"\n[train]\nout_dir = "x"\nmax_steps = 1\nlearning_rate = 1\n')
    with pytest.raises(Mesh3DError, match="learning_rate"):
        load_config(path)


def test_bench_prints_the_kv_cache_speedup(capsys):
    bench.main(["--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--prefix", "4", "--tokens", "16"])
    assert "KV cache speed-up" in capsys.readouterr().out


def test_padding_is_ignored_by_the_loss():
    torch.manual_seed(0)
    model = ToyTask().build_model().eval()
    cond, tokens = torch.tensor([2]), torch.tensor([[0, 5, 6, 7, 1]])
    padded = torch.cat([tokens, torch.full((1, 3), 15)], dim=1)
    torch.testing.assert_close(model(cond, padded, pad_id=15), model(cond, tokens))


def test_trainer_command_line_with_a_toml_config(tmp_path):
    from mesh3d.nn.trainer import main

    (tmp_path / "run.toml").write_text(
        'task = "mesh3d.nn.toy:ToyTask"\n[task_options]\nseq_len = 4\n'
        f'[train]\nout_dir = "{tmp_path / "out"}"\nmax_steps = 6\nbatch_size = 4\nwarmup_steps = 2\neval_every = 3\n')
    main([str(tmp_path / "run.toml")])
    rows = list(csv.reader(open(tmp_path / "out" / "log.csv")))
    assert ["3", "eval", "exact_match"] in [r[:3] for r in rows] and ["6", "eval", "exact_match"] in [r[:3] for r in rows]
    assert read_metadata(tmp_path / "out" / "model.safetensors")["task_options"] == {"seq_len": 4}
