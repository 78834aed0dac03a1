# Two entry points for a fresh machine: `make demo` and `make test` (see README).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: demo test test-slow install dev clean blender

# The stamp is rebuilt when the package's requirements change.
$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (mesh3d needs Python 3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	# The local CPU build of torch first: a bare requirement would pull a multi-GB CUDA build.
	$(PIP) install torch==2.13.0
	$(PIP) install -e .
	touch $@

$(VENV)/.dev: $(VENV)/.installed
	$(PIP) install -e '.[dev]'
	touch $@

install: $(VENV)/.installed
dev: $(VENV)/.dev

demo: $(VENV)/.installed
	$(VENV)/bin/mesh3d demo -o out/demo.glb

# --- Blender: bpy (Blender as a Python module) reads and writes FBX and checks our GLBs import into
# real Blender. It pins Python 3.11 and numpy<2, so it lives in its own venv, used only through
# subprocesses (mesh3d/io/blender.py).
BLENDER_VENV := .venv-blender
# X11/GL client libraries bpy links even when headless; a bare Debian lacks them.
BLENDER_APT := libx11-6 libxrender1 libxfixes3 libxi6 libxkbcommon0 libsm6 libgl1 libxext6

$(BLENDER_VENV)/.installed:
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Blender's bpy needs Python 3.11)"; exit 1; }
	$(PYTHON) -m venv $(BLENDER_VENV)
	$(BLENDER_VENV)/bin/python -m pip --disable-pip-version-check -q install bpy==5.0.1
	$(BLENDER_VENV)/bin/python -c "import bpy" 2>/dev/null || { apt-get update && apt-get install -y --no-install-recommends $(BLENDER_APT); }
	$(BLENDER_VENV)/bin/python -c "import bpy; print('Blender', bpy.app.version_string, 'ready')"
	touch $@

blender: $(BLENDER_VENV)/.installed
# --- end Blender

test: $(VENV)/.dev $(BLENDER_VENV)/.installed
	$(PY) -m pytest -q

test-slow: $(VENV)/.dev $(BLENDER_VENV)/.installed
	$(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) out

# The full rigging evaluation (issue 3 "Checks"; not part of `make test`): the geometric rigger vs
# Blender's bone heat on the shared dev split and on every shared rig, reports under out/.
# Needs the shared data: MESH3D_DATA=/path/to/quaternius make eval-rig
.PHONY: eval-rig
eval-rig: $(VENV)/.installed $(BLENDER_VENV)/.installed
	@mkdir -p out
	$(VENV)/bin/mesh3d eval rig --split dev --skeleton geometric --skin both --out out/eval_rig_dev.json
	$(VENV)/bin/mesh3d eval rig --split all --skeleton geometric --skin both --out out/eval_rig_all.json

# Node tools for the tests: the Khronos glTF-Validator, pinned by package-lock.json (mesh3d/io/validate.py).
node_modules/.installed: package-lock.json
	@command -v node >/dev/null && command -v npm >/dev/null || { echo "error: node/npm not found (the tests validate glTF with Node.js >= 18 and npm: apt-get install nodejs npm)"; exit 1; }
	npm ci --no-audit --no-fund
	touch $@

test test-slow: node_modules/.installed

# Headless Chromium for the web app's browser tests (tests/test_web.py): Debian's package, driven by
# Playwright, which cannot download browsers of its own here. Installing needs root and apt-get;
# without them the browser tests are skipped with a loud message (and fail in CI).
.PHONY: chromium
chromium:
	@test -x /usr/bin/chromium || { [ "$$(id -u)" = 0 ] && apt-get update -q && apt-get install -y -q chromium; } || \
		echo "!!!!! WARNING: could not install chromium (needs root and apt-get): the web app's browser tests will be SKIPPED !!!!!"

test test-slow: chromium
