"""rigging.animate: chain labels on the shared rigs, motion loops, quality figures, retargeting,
exports through the validator, the CLI and previews."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from mesh3d.asset import Asset, Mesh, Skeleton
from mesh3d.errors import Mesh3DError
from mesh3d.io import load
from rigging.animate.chains import foot_point, label_chains, mixamo_names
from rigging.animate.kinematics import world_pose
from rigging.animate.motions import MOTIONS, list_motions, make_motion
from rigging.animate.quality import SLIDE_LIMIT, clip_metrics, motions_for
from rigging.animate.retarget import find_clip, retarget
from test_bad_input import run_cli

ASTRONAUT = "ultimate_space_pack/Astronaut_BarbaraTheBee-transformed.glb"


@pytest.fixture(scope="module")
def rigs(rig_records):
    """{file: (asset, labels)} for the rigs these tests use, loaded once."""
    by_file = {r.file: r for r in rig_records}
    out = {}
    for f in ("animals_pack/Wolf.glb", "animals_pack/Bull.glb", ASTRONAUT, "modular_men/Casual.glb", "fish_pack/Whale.glb", "mech_pack/Stan.glb"):
        asset = load(by_file[f].path)
        out[f] = (asset, label_chains(asset.skeleton, asset.mesh))
    return out


def names(asset, joints):
    return [asset.skeleton.names[j] for j in joints]


def test_humanoids_get_mixamo_names(rigs):
    asset, labels = rigs["modular_men/Casual.glb"]
    assert labels.kind == "humanoid"
    mapping = {v: asset.skeleton.names[k] for k, v in mixamo_names(asset.skeleton, labels).items()}
    # The artist's own names are the ground truth (labelling never reads them).
    assert mapping == {
        "Hips": "Hips", "Spine": "Abdomen", "Spine1": "Torso", "Spine2": "Chest", "Neck": "Neck", "Head": "Head",
        "LeftShoulder": "Shoulder.L", "LeftArm": "UpperArm.L", "LeftForeArm": "LowerArm.L", "LeftHand": "Hand.L",
        "RightShoulder": "Shoulder.R", "RightArm": "UpperArm.R", "RightForeArm": "LowerArm.R", "RightHand": "Hand.R",
        "LeftUpLeg": "UpperLeg.L", "LeftLeg": "LowerLeg.L", "LeftFoot": "Foot.L",
        "RightUpLeg": "UpperLeg.R", "RightLeg": "LowerLeg.R", "RightFoot": "Foot.R",
    }
    # Feet hung under the armature root (an IK rig) are found on their legs.
    astro, alabels = rigs[ASTRONAUT]
    assert alabels.kind == "humanoid"
    legs = {c.side: names(astro, c.joints) for c in alabels.get("leg")}
    assert legs == {1: ["UpperLeg.L", "LowerLeg.L", "Foot.L"], -1: ["UpperLeg.R", "LowerLeg.R", "Foot.R"]}
    amap = {v: astro.skeleton.names[k] for k, v in mixamo_names(astro.skeleton, alabels).items()}
    assert amap["LeftArm"] == "UpperArm.L" and amap["RightShoulder"] == "Shoulder.R" and amap["Head"] == "Head"


def test_quadrupeds_have_four_legs_on_the_ground_a_tail_and_a_head(rigs):
    for f in ("animals_pack/Wolf.glb", "animals_pack/Bull.glb"):
        asset, labels = rigs[f]
        assert labels.kind == "quadruped", f
        legs = labels.get("leg")
        assert sorted(c.side for c in legs) == [-1, -1, 1, 1]
        for c in legs:
            tip, offset = foot_point(asset.skeleton, labels, c)
            assert asset.skeleton.joints[tip, 1] + offset[1] - labels.ground < 0.1 * labels.size
            assert all(("Leg" in n or "Shoulder" in n or n.startswith("FF")) for n in names(asset, c.joints)), names(asset, c.joints)
        assert all(n.startswith("Tail") for n in names(asset, labels.first("tail").joints))
        assert names(asset, labels.first("head").joints) == ["Head"]
        # Left is +X for an asset facing +Z; front legs come first on each side.
        left = [c for c in legs if c.side > 0]
        assert all(asset.skeleton.joints[c.joints[-1], 0] > 0 for c in left)
        assert "Front" in names(asset, left[0].joints)[0] and "Back" in names(asset, left[1].joints)[0]


def test_fish_and_a_snake(rigs, rig_records):
    whale, labels = rigs["fish_pack/Whale.glb"]
    assert labels.kind == "fish"
    assert sorted(names(whale, [c.joints[0] for c in labels.get("fin")])) == ["TopFlipper.L", "TopFlipper.R"]
    for r in [r for r in rig_records if r.pack == "cute_fish_pack"][:6]:
        a = load(r.path)
        assert label_chains(a.skeleton, a.mesh).kind == "fish", r.file
    # The corpus has no snake: a coiled chain of 14 joints lying on the ground, with a tube mesh.
    s = np.linspace(0, 1, 14)
    pts = np.stack([0.15 * np.sin(2 * np.pi * 1.5 * s), np.full(14, 0.05), 2.0 - 3.0 * s], 1)
    skel = Skeleton(pts, np.arange(14) - 1, [f"j{i}" for i in range(14)])
    ring = np.stack([np.cos(np.linspace(0, 2 * np.pi, 8, endpoint=False)), np.sin(np.linspace(0, 2 * np.pi, 8, endpoint=False))], 1) * 0.05
    verts = np.concatenate([p + np.stack([ring[:, 0], ring[:, 1], np.zeros(8)], 1) for p in pts])
    faces = np.array([[i * 8 + k, i * 8 + (k + 1) % 8, (i + 1) * 8 + k] for i in range(13) for k in range(8)])
    snake = label_chains(skel, Mesh(verts, faces))
    assert snake.kind == "snake" and not snake.get("leg")
    assert sorted(j for c in snake.chains for j in c.joints) == list(range(14))
    anim = make_motion("slither", Asset(Mesh(verts, faces), skel), snake)
    _, p = world_pose(skel, anim)
    assert np.ptp(p[:, :, 0], axis=0).max() > 0.1  # the body really undulates sideways


def test_a_rig_bound_lying_on_its_side_gets_its_own_up(rig_records):
    """The Triceratops is bound lying on its side (head along +Y, legs along +X): labelled with
    +Y up it was a legless flyer. Its up is -X (the feet's side is the ground), its forward +Y,
    and its front feet stand on that ground. (Its hind feet are bound lifted off it, so it is not
    yet a quadruped.)"""
    (r,) = [r for r in rig_records if r.file == "dinosaurs_pack/Triceratops.glb"]
    a = load(r.path)
    labels = label_chains(a.skeleton, a.mesh)
    assert np.allclose(labels.up, [-1, 0, 0]) and np.allclose(labels.forward, [0, 1, 0])
    assert labels.kind != "flyer" and len(labels.get("leg")) == 2
    front = [a.skeleton.names[c.joints[-1]] for c in labels.get("leg")]
    assert sorted(front) == ["FrontFoot.L", "FrontFoot.R"]
    assert labels.get("tail") and labels.get("head")
    # Upright figures whose arms reach forward (mechs) keep +Y: they stand on their legs.
    mech = next(r for r in rig_records if r.file == "ultimate_space_pack/Mech_FinnTheFrog-transformed.glb")
    m = load(mech.path)
    upright = label_chains(m.skeleton, m.mesh)
    assert upright.kind == "humanoid" and np.allclose(upright.up, [0, 1, 0])


@pytest.mark.skipif(importlib.util.find_spec("rigging.skeleton.geometric") is None, reason="rigging.skeleton.geometric not in this checkout")
def test_geometric_rigs_of_fish_with_long_fins_are_fish(rig_records):
    """Long fins reaching back or down are fins, not wings (BlueTang, Lionfish and YellowTang were
    labelled flyers); low fins of a fish whose belly lies as low, or on one side only, are not legs
    (ButterflyFish and Shark were multipeds); a tall fish, its body axis vertical, is not a body lying on its side (Sunfish)."""
    from rigging.skeleton.geometric import geometric_skeleton

    by_file = {r.file: r for r in rig_records}
    for f in ("cute_fish_pack/BlueTang.glb", "cute_fish_pack/Lionfish.glb", "cute_fish_pack/YellowTang.glb",
              "cute_fish_pack/ButterflyFish.glb", "cute_fish_pack/Shark.glb", "cute_fish_pack/Sunfish.glb", "fish_pack/Whale.glb"):
        a = load(by_file[f].path)
        labels = label_chains(geometric_skeleton(a.mesh), a.mesh)
        assert labels.kind == "fish" and not labels.get("wing") and not labels.get("leg"), f
        assert np.allclose(labels.up, [0, 1, 0]), f


@pytest.mark.skipif(importlib.util.find_spec("data_prep.procedural") is None, reason="data_prep.procedural not in this checkout")
def test_procedural_creatures_are_labelled_as_their_kind():
    from data_prep.procedural import make_creature

    expect = {"humanoid": "humanoid", "quadruped": "quadruped", "bird": "bird", "fish": "fish", "snake": "snake", "spider": "octopod", "insect": "hexapod"}
    for kind, label in expect.items():
        for seed in range(2):
            a = make_creature(kind, seed)
            assert label_chains(a.skeleton, a.mesh).kind == label, (kind, seed)


@pytest.mark.skipif(importlib.util.find_spec("rigging.skeleton.geometric") is None, reason="rigging.skeleton.geometric not in this checkout")
def test_geometric_rigs_are_labelled_like_the_artist_rigs(rigs):
    from rigging.skeleton.geometric import geometric_skeleton

    for f in ("animals_pack/Wolf.glb", "animals_pack/Bull.glb", "modular_men/Casual.glb", "mech_pack/Stan.glb"):
        asset, artist = rigs[f]
        skeleton = geometric_skeleton(asset.mesh)
        labels = label_chains(skeleton, asset.mesh)
        assert labels.kind == artist.kind, f
        walk = clip_metrics(skeleton, make_motion("walk", skeleton, labels), labels)
        assert walk.slide <= SLIDE_LIMIT and walk.drift < 1e-9


def test_motions_loop_seamlessly_and_keep_bones(rigs):
    for f in ("animals_pack/Wolf.glb", ASTRONAUT, "fish_pack/Whale.glb"):
        asset, labels = rigs[f]
        for name in motions_for(labels):
            anim = make_motion(name, asset, labels, fps=24)
            assert anim.name == name and anim.fps == 24
            _, p = world_pose(asset.skeleton, anim)
            body = labels.parents >= -1
            p = p[:, body] / labels.size
            assert np.abs(p[0] - p[-1]).max() < 1e-9, (f, name)
            # The seam (last frame -> first) accelerates no more than the clip does elsewhere.
            seam = np.linalg.norm(p[1] - 2 * p[0] + p[-2], axis=-1).max()
            inner = np.linalg.norm(p[2:] - 2 * p[1:-1] + p[:-2], axis=-1).max()
            assert seam <= inner * 1.05 + 1e-9, (f, name, seam, inner)
            assert clip_metrics(asset.skeleton, anim, labels).drift < 1e-9


def test_gaits_plant_feet_and_are_no_jerkier_than_the_artist_clips(rigs):
    for f, motion, clip in (("animals_pack/Wolf.glb", "walk", "Walk"), (ASTRONAUT, "walk", "Walk"), (ASTRONAUT, "run", "Run"),
                            ("mech_pack/Stan.glb", "walk", "Walk"), (ASTRONAUT, "idle", "Idle")):
        asset, labels = rigs[f]
        ours = clip_metrics(asset.skeleton, make_motion(motion, asset, labels), labels)
        artist = clip_metrics(asset.skeleton, find_clip(asset, clip), labels)
        assert ours.jitter <= artist.jitter, (f, motion, ours, artist)
        assert ours.slide is not None and ours.slide <= SLIDE_LIMIT, (f, motion, ours)
    # The feet do travel: a walk's contact foot sweeps a stride of a good fraction of a leg.
    asset, labels = rigs["animals_pack/Wolf.glb"]
    _, p = world_pose(asset.skeleton, make_motion("walk", asset, labels))
    leg = labels.get("leg")[0]
    assert np.ptp(p[:, leg.joints[-1]] @ labels.forward) > 0.3 * np.ptp(asset.skeleton.joints[:, 1])


def test_retarget_a_quadruped_walk(rigs):
    src, src_labels = rigs["animals_pack/Bull.glb"]
    dst, dst_labels = rigs["animals_pack/Wolf.glb"]
    clip = find_clip(src, "Walk")
    anim = retarget(src, clip, dst, iters=150, src_labels=src_labels, dst_labels=dst_labels)
    assert anim.num_frames == clip.num_frames and anim.translations.shape[1] == len(dst.skeleton)
    m = clip_metrics(dst.skeleton, anim, dst_labels)
    source = clip_metrics(src.skeleton, clip, src_labels)
    assert m.slide <= SLIDE_LIMIT and m.drift < 1e-9
    assert m.jitter <= 1.25 * source.jitter, (m, source)
    # The legs follow the source's stepping: each foot moves along the body by a real stride.
    _, p = world_pose(dst.skeleton, anim)
    for c in dst_labels.get("leg"):
        assert np.ptp(p[:, c.joints[-1]] @ dst_labels.forward) > 0.1 * dst_labels.size


def test_retargeting_a_sliding_run_plants_the_feet(rigs, rig_records):
    """Stan's Run slides its feet (above the 2 % target); retargeted onto Rae, the feet are pinned
    during each contact and the target meets the target on its own."""
    rae = next(r for r in rig_records if r.file == "ultimate_space_pack/Astronaut_RaeTheRedPanda-transformed.glb")
    dst = load(rae.path)
    dst_labels = label_chains(dst.skeleton, dst.mesh)
    src, src_labels = rigs["mech_pack/Stan.glb"]
    clip = find_clip(src, "Run")
    assert clip_metrics(src.skeleton, clip, src_labels).slide > SLIDE_LIMIT
    m = clip_metrics(dst.skeleton, retarget(src, clip, dst, src_labels=src_labels, dst_labels=dst_labels), dst_labels)
    assert m.slide <= SLIDE_LIMIT and m.drift < 1e-9, m


def test_errors_a_user_can_act_on(rigs):
    whale, labels = rigs["fish_pack/Whale.glb"]
    with pytest.raises(Mesh3DError, match="no legs.*swim"):
        make_motion("walk", whale, labels)
    with pytest.raises(Mesh3DError, match="unknown motion 'moonwalk'"):
        make_motion("moonwalk", whale)
    with pytest.raises(Mesh3DError, match="no animation 'Dance'.*Swim"):
        find_clip(whale, "Dance")
    assert {n for n, _ in list_motions()} == set(MOTIONS) >= {"walk", "run", "idle", "jump", "look_around", "wave", "attack", "swim", "slither", "fly"}


def test_cli_animate_exports_named_clips_that_validate(rig_records, tmp_path):
    from mesh3d.io.validate import validate_gltf, validator_available

    from conftest import require

    by_file = {r.file: r for r in rig_records}
    out = tmp_path / "casual.glb"
    res = run_cli("animate", by_file["modular_men/Casual.glb"].path, "-o", out, "--motion", "walk", "--motion", "idle",
                  "--motion-from", f"{by_file[ASTRONAUT].path}:Run", "--mixamo-names")
    assert res.returncode == 0, res.stderr
    asset = load(out)
    assert [a.name for a in asset.animations] == ["walk", "idle", "Run"]
    assert {"Hips", "LeftUpLeg", "RightForeArm", "Head"} <= set(asset.skeleton.names)
    res = run_cli("animate", by_file["fish_pack/Whale.glb"].path, "-o", tmp_path / "w.glb", "--motion", "walk")
    assert res.returncode == 1 and "no legs" in res.stderr
    assert "slither" in run_cli("motions").stdout
    require(validator_available(), "glTF-Validator not installed: run `make node_modules/.installed`")
    report = validate_gltf(out)[0]
    assert report["numErrors"] == 0, report


def test_preview_png_and_gif(rigs, tmp_path):
    from PIL import Image

    asset, labels = rigs["animals_pack/Wolf.glb"]
    res = run_cli("preview", _path(tmp_path, asset), "-o", tmp_path / "p.png", "--size", "96")
    assert res.returncode == 0, res.stderr
    img = np.asarray(Image.open(tmp_path / "p.png").convert("RGB"))
    assert img.shape == (96, 96 * 6, 3)  # six frames of the first clip
    assert (img.sum(-1) < 600).mean() > 0.02  # something was drawn on the white background
    red = (img[..., 0] > 150) & (img[..., 1] < 90) & (img[..., 2] < 90)
    assert red.any()  # the spine is drawn over the mesh
    from rigging.animate.preview import preview

    preview(Asset(asset.mesh, asset.skeleton, asset.skin), tmp_path / "t.gif", size=64)
    gif = Image.open(tmp_path / "t.gif")
    assert gif.n_frames == 24  # a turntable when there is no clip
    assert run_cli("preview", _path(tmp_path, asset), "-o", tmp_path / "p.jpg").returncode == 1


def _path(tmp_path, asset):
    from mesh3d.io import save

    p = tmp_path / "src.glb"
    if not p.exists():
        save(asset, p)
    return p
