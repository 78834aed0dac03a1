"""Mesh tokenizers: preprocessing, exact round trips, grammar masks and robust decoding."""

import copy

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh3d.asset import Mesh
from mesh3d.errors import Mesh3DError
from mesh3d.geometry.normalize import normalize_unit_cube
from mesh3d.tokenizers import BOS, EOS, PAD, TOKENIZERS, QuantizedMesh, canonicalize, get_tokenizer, quantize_mesh

SCHEMES = list(TOKENIZERS)
HYP = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def cube_mesh() -> Mesh:
    v = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], float) * 2.0 + 3.0
    f = [[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
         [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]]
    return Mesh(v, f)


@st.composite
def soups(draw, bits=7):
    """Random triangle soups: few distinct grid points, so faces collide, share edges non-manifoldly,
    repeat, degenerate and form many small pieces and isolated triangles."""
    n = draw(st.integers(3, 40))
    spread = draw(st.sampled_from([3, 8, (1 << bits) - 1]))
    coords = draw(st.lists(st.tuples(*[st.integers(0, spread)] * 3), min_size=n, max_size=n))
    faces = draw(st.lists(st.tuples(*[st.integers(0, n - 1)] * 3), min_size=0, max_size=80))
    return QuantizedMesh(np.array(coords), np.array(faces, dtype=np.int64).reshape(-1, 3), bits)


@st.composite
def surfaces(draw):
    """Random grid height-field surfaces with holes, flipped faces and stray triangles: manifold
    patches that exercise adjacency traversal."""
    w, h = draw(st.integers(2, 9)), draw(st.integers(2, 9))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    xs, zs = np.meshgrid(np.arange(w) * 11, np.arange(h) * 13, indexing="ij")
    ys = rng.integers(0, 40, size=xs.shape)
    coords = np.stack([xs, ys, zs], -1).reshape(-1, 3)
    faces = []
    for i in range(w - 1):
        for j in range(h - 1):
            a, b, c, d = i * h + j, i * h + j + 1, (i + 1) * h + j, (i + 1) * h + j + 1
            faces += [(a, b, d), (a, d, c)]
    faces = np.array(faces)
    faces = faces[rng.random(len(faces)) > draw(st.sampled_from([0.0, 0.1, 0.4]))]
    flip = rng.random(len(faces)) < draw(st.sampled_from([0.0, 0.05, 0.3]))
    faces[flip] = faces[flip][:, ::-1]
    extra = rng.integers(0, len(coords), size=(draw(st.integers(0, 5)), 3))
    return QuantizedMesh(coords, np.concatenate([faces.reshape(-1, 3), extra]), 7)


# --- preprocessing ---------------------------------------------------------------------------

def test_normalize_unit_cube():
    v = np.array([[1.0, 2.0, 3.0], [5.0, 3.0, 4.0], [2.0, 2.5, 3.5]])
    n, center, scale = normalize_unit_cube(v)
    assert np.allclose(n.min(0) + n.max(0), 0)
    assert np.isclose((n.max(0) - n.min(0)).max(), 1.0)
    assert np.allclose(n * scale + center, v)
    flat, _, s = normalize_unit_cube(np.ones((4, 3)))
    assert s == 1.0 and np.allclose(flat, 0)


def test_quantize_cleans_and_orders():
    v = [[0, 0, 0], [1, 0, 0], [0, 1, 0], [1e-6, 0, 0], [0, 0, 1]]  # vertex 3 merges into 0
    f = [[0, 1, 2], [3, 1, 2], [1, 2, 0], [0, 2, 1], [0, 0, 1], [3, 0, 4], [1, 2, 4]]
    q = quantize_mesh(Mesh(v, f))
    # Kept: (0,1,2) once (rotations and the merged copy are duplicates), its reverse (0,2,1), and
    # (1,2,4); dropped: degenerate (0,0,1) and (3,0,4) after merging.
    assert len(q.coords) == 4 and len(q.faces) == 3
    assert q.coords.min() == 0 and q.coords.max() == 127
    order = np.lexsort((q.coords[:, 0], q.coords[:, 2], q.coords[:, 1]))
    assert np.array_equal(order, np.arange(4)), "vertices are sorted y, z, x"
    assert (q.faces[:, 0] < q.faces[:, 1:].min(1)).all(), "each face starts at its lowest vertex"
    assert np.array_equal(q.faces, np.unique(q.faces, axis=0)), "faces are sorted"
    assert q.same_as(quantize_mesh(q)), "idempotent"


@HYP
@given(soups(), st.randoms(use_true_random=False))
def test_canonical_order_ignores_input_order(q, rnd):
    perm = list(range(len(q.coords)))
    rnd.shuffle(perm)
    inv = np.argsort(perm)
    faces = inv[q.faces] if len(q.faces) else q.faces
    faces = np.array([list(f[k:]) + list(f[:k]) for f, k in zip(faces, [rnd.randrange(3) for _ in faces])]).reshape(-1, 3)
    order = list(range(len(faces)))
    rnd.shuffle(order)
    faces = faces[order]
    a, b = canonicalize(q), canonicalize(QuantizedMesh(q.coords[perm], faces, 7))
    assert np.array_equal(a.coords, b.coords) and np.array_equal(a.faces, b.faces)


def test_unsupported_bits_is_a_user_error():
    with pytest.raises(Mesh3DError):
        get_tokenizer("vst", bits=6)
    with pytest.raises(Mesh3DError):
        get_tokenizer("nope")


# --- round trip ------------------------------------------------------------------------------

def roundtrip(name: str, q: QuantizedMesh) -> None:
    t = get_tokenizer(name, q.bits)
    tokens = t.encode(q)
    assert tokens[0] == BOS and tokens[-1] == EOS
    assert tokens.min() >= 0 and tokens.max() < t.vocab_size
    d = t.decode(tokens)
    assert d.problems == 0
    assert d.mesh.same_as(quantize_mesh(q, q.bits)), f"{name} round trip differs"


@pytest.mark.parametrize("name", SCHEMES)
def test_roundtrip_small_cases(name):
    t = get_tokenizer(name)
    empty = t.decode(t.encode(Mesh(np.zeros((0, 3)), np.zeros((0, 3)))))
    assert empty.problems == 0 and len(empty.mesh.faces) == 0
    roundtrip(name, quantize_mesh(cube_mesh()))
    tri = QuantizedMesh([[0, 0, 0], [5, 0, 0], [0, 5, 0]], [[0, 1, 2], [0, 2, 1]], 7)  # two-sided
    roundtrip(name, tri)
    fin = QuantizedMesh([[0, 0, 0], [9, 0, 0], [0, 9, 0], [0, 0, 9], [9, 9, 9]],
                        [[0, 1, 2], [1, 0, 3], [0, 1, 4]], 7)  # three faces on one edge, one flipped
    roundtrip(name, fin)


@pytest.mark.parametrize("name", SCHEMES)
@HYP
@given(q=st.one_of(soups(), surfaces()))
def test_roundtrip_random(name, q):
    roundtrip(name, q)


@pytest.mark.parametrize("name", SCHEMES)
@pytest.mark.parametrize("bits", [8, 9, 10])
def test_roundtrip_more_bits(name, bits):
    rng = np.random.default_rng(bits)
    q = QuantizedMesh(rng.integers(0, 1 << bits, size=(60, 3)), rng.integers(0, 60, size=(150, 3)), bits)
    roundtrip(name, q)
    roundtrip(name, quantize_mesh(cube_mesh(), bits))


def test_vst_is_compact_on_closed_surfaces():
    """A closed, consistently oriented surface costs no STOP: far under 0.2 of naive."""
    from mesh3d.tokenizers.vst import STOP

    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=3)
    q = quantize_mesh(Mesh(sphere.vertices, sphere.faces))
    tokens = get_tokenizer("vst").encode(q)
    assert STOP not in tokens.tolist()
    assert len(tokens) / len(q.faces) < 0.2 * 9


# --- grammar masks and robust decoding -------------------------------------------------------

@pytest.mark.parametrize("name", SCHEMES)
@settings(max_examples=15, deadline=None)
@given(q=st.one_of(soups(), surfaces()))
def test_mask_admits_every_encoded_token(name, q):
    t = get_tokenizer(name)
    g = t.grammar()
    for tok in t.encode(q).tolist():
        assert g.mask()[tok], f"{name}: mask rejects token {tok} of a valid encoding"
        assert g.step(tok)
    assert g.done and g.mask().tolist() == [i == PAD for i in range(t.vocab_size)]


@pytest.mark.parametrize("name", SCHEMES)
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_sampling_under_the_mask_always_decodes(name, seed):
    """Tokens drawn at random from the mask are always accepted: a constrained decoder cannot
    write an unreadable sequence (only repeated faces can be dropped)."""
    t = get_tokenizer(name)
    rng = np.random.default_rng(seed)
    g, tokens = t.grammar(), []
    for step in range(150):
        m = g.mask()
        if g.done:
            break
        if step % 10 == 0:  # the mask says exactly which tokens step() accepts
            probe = np.unique(np.concatenate([np.arange(24), rng.integers(0, t.vocab_size, 40),
                                              rng.choice(np.flatnonzero(m), 10)]))
            assert [copy.deepcopy(g).step(int(x)) for x in probe] == m[probe].tolist()
        allowed = np.flatnonzero(m)
        # Favour structure tokens so that short walks reach seeds, flips and refs too.
        small = allowed[allowed < 16]
        tok = int(rng.choice(small if len(small) and rng.random() < 0.5 else allowed))
        assert g.step(tok), f"{name}: mask allowed {tok} but step rejected it"
        tokens.append(tok)
    assert g.rejected == 0
    assert g.decoded().problems == t.decode(tokens).problems == g.builder.problems + (0 if g.done else 1)
    assert not any(len(set(f)) < 3 for f in g.builder.faces), "the mask prevents degenerate faces"


@pytest.mark.parametrize("name", SCHEMES)
@HYP
@given(data=st.data())
def test_decode_never_fails(name, data):
    t = get_tokenizer(name)
    q = data.draw(st.one_of(soups(), surfaces()))
    good = t.encode(q).tolist()
    kind = data.draw(st.sampled_from(["garbage", "truncated", "mutated", "spliced"]))
    if kind == "garbage":
        tokens = data.draw(st.lists(st.integers(-5, t.vocab_size + 5), max_size=300))
    elif kind == "truncated":
        tokens = good[:data.draw(st.integers(0, max(len(good) - 1, 0)))]
    elif kind == "mutated":
        tokens = list(good)
        for _ in range(data.draw(st.integers(1, 5))):
            tokens[data.draw(st.integers(0, len(tokens) - 1))] = data.draw(st.integers(0, t.vocab_size - 1))
    else:
        tokens = good[:len(good) // 2] + good[len(good) // 3:]
    d = t.decode(tokens)
    assert d.problems >= 0
    f = d.mesh.faces
    assert f.size == 0 or (f.min() >= 0 and f.max() < len(d.mesh.coords))
    assert d.mesh.coords.size == 0 or (d.mesh.coords.min() >= 0 and d.mesh.coords.max() < 128)
    if kind == "truncated":
        assert d.problems >= 1, "a sequence without EOS is reported"


@pytest.mark.parametrize("name", SCHEMES)
def test_decode_odd_inputs(name):
    t = get_tokenizer(name)
    assert t.decode([]).problems == 1
    assert t.decode([BOS, 1.5, "x", None, EOS]).problems >= 3
    d = t.decode(np.random.default_rng(0).integers(0, t.vocab_size, 50_000))
    assert d.problems > 0
    good = t.encode(quantize_mesh(cube_mesh()))
    assert t.decode(list(good) + [PAD] * 3).problems == 0, "padding after EOS is fine"
    assert t.decode(list(good) + [BOS]).problems == 1, "tokens after EOS are problems"


@pytest.mark.parametrize("name", SCHEMES)
def test_grammar_drives_the_shared_decoder(name):
    """The grammar plugs into mesh3d.nn's generate: an untrained model writes a readable mesh."""
    import torch

    from mesh3d.nn.model import GPT, GPTConfig

    t = get_tokenizer(name)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=t.vocab_size, block_size=128, n_layer=1, n_head=2, n_embd=32))
    g = t.grammar()
    seq = model.generate(torch.tensor([[BOS]]), 100, grammar=g, eos_id=EOS,
                         generator=torch.Generator().manual_seed(1))[0].tolist()
    replay = t.grammar()
    assert all(replay.step(x) for x in seq), "every generated token was allowed"
    assert not g.started, "generate advances clones; the grammar passed in is untouched"
    assert len(seq) > 10 and len(replay.builder.faces) > 0
    half = t.grammar()
    for x in seq[:len(seq) // 2]:
        half.advance(x)
    clone = half.clone()
    n_faces = len(half.builder.faces)
    for x in seq[len(seq) // 2:]:
        clone.advance(x)
    assert len(half.builder.faces) == n_faces and clone.problems == replay.problems
    assert torch.equal(clone.allowed(), torch.from_numpy(replay.mask()))
